"""Checkpoint layout, atomicity, checksums, retention, fallback, the weights resolver, architecture checks,
fine-tuning loads."""

import copy
import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from hpdm.core import checkpoints as layout
from hpdm.trainers import checkpoint as ckpt
from train_helpers import flip_bit_in_payload


def _model(width=4, extra=False):
    layers = [nn.Linear(3, width), nn.LayerNorm(width)]
    if extra:
        layers.append(nn.Linear(width, 2))
    return nn.Sequential(*layers)


def _save(workdir, step, model, keep=3):
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    state = {"step": step, "optimizer": opt.state_dict(), "rng": torch.get_rng_state(), "data": {"i": step}}
    return ckpt.save_checkpoint(workdir, step, model.state_dict(), model.state_dict(), state, keep=keep)


def test_layout_roundtrip_and_weights_only(tmp_path):
    m = _model()
    path = _save(str(tmp_path), 7, m)
    assert path == os.path.join(str(tmp_path), "checkpoints", "step_00000007")
    assert sorted(os.listdir(path)) == ["ema.safetensors", "manifest.json", "model.safetensors", "state.pt"]
    model_sd, ema_sd, state = ckpt.load_checkpoint(path)
    for k, v in m.state_dict().items():
        assert torch.equal(model_sd[k], v) and torch.equal(ema_sd[k], v)
    assert state["step"] == 7 and state["data"] == {"i": 7}
    torch.load(os.path.join(path, "state.pt"), weights_only=True)


def test_keep_last_k_and_tmp_ignored(tmp_path):
    m = _model()
    for step in (1, 2, 3, 4):
        _save(str(tmp_path), step, m, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [4, 3]
    # A half-written checkpoint (killed before the rename) is invisible.
    os.makedirs(os.path.join(str(tmp_path), "checkpoints", "step_00000009.tmp"))
    assert ckpt.latest_valid_checkpoint(str(tmp_path)).endswith("step_00000004")
    _save(str(tmp_path), 5, m, keep=2)
    assert not os.path.exists(os.path.join(str(tmp_path), "checkpoints", "step_00000009.tmp"))


@pytest.mark.parametrize("victim", ["model.safetensors", "state.pt", "ema.safetensors"])
def test_corrupt_newest_falls_back(tmp_path, victim, caplog):
    m = _model()
    _save(str(tmp_path), 1, m)
    newest = _save(str(tmp_path), 2, m)
    with open(os.path.join(newest, victim), "r+b") as f:
        f.truncate(10)
    found = ckpt.load_latest(str(tmp_path))
    assert found is not None and found[0].endswith("step_00000001")
    assert found[1][2]["step"] == 1


@pytest.mark.parametrize("victim", ["model.safetensors", "ema.safetensors", "state.pt"])
def test_flipped_bit_is_detected_and_the_older_checkpoint_used(tmp_path, victim):
    from safetensors.torch import load_file

    m = _model()
    _save(str(tmp_path), 1, m)
    newest = _save(str(tmp_path), 2, m)
    flip_bit_in_payload(os.path.join(newest, victim))
    if victim != "state.pt":
        load_file(os.path.join(newest, victim))  # still a well-formed file: only the checksum tells
    with pytest.raises(ckpt.CheckpointError, match=f"{victim} does not match its sha256"):
        ckpt.load_checkpoint(newest)
    found = ckpt.load_latest(str(tmp_path))
    assert found[0].endswith("step_00000001") and found[1][2]["step"] == 1


def test_checkpoint_without_manifest_loads_unverified_with_a_warning(tmp_path, caplog):
    """Checkpoints written before checksums existed still load (and still resume runs)."""
    m = _model()
    path = _save(str(tmp_path), 3, m)
    os.remove(os.path.join(path, "manifest.json"))
    assert ckpt.verify_checkpoint(path) is False
    model_sd, _, state = ckpt.load_checkpoint(path)
    assert state["step"] == 3 and all(torch.equal(model_sd[k], v) for k, v in m.state_dict().items())
    assert "loading it unverified" in caplog.text


def test_retention_counts_only_verified_checkpoints(tmp_path, monkeypatch):
    """keep=1 next to a newer damaged checkpoint: the valid one just saved stays, and it is what loads."""
    m = _model()
    damaged = _save(str(tmp_path), 3, m)
    flip_bit_in_payload(os.path.join(damaged, "model.safetensors"))
    monkeypatch.setattr(layout, "_VERIFIED", {})  # as in the next process: nothing verified yet
    _save(str(tmp_path), 2, m, keep=1)
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [3, 2]
    assert ckpt.load_latest(str(tmp_path))[0].endswith("step_00000002")
    # A verified newer one makes both older ones surplus, the damaged one included.
    _save(str(tmp_path), 4, m, keep=1)
    assert [s for s, _ in ckpt.list_checkpoints(str(tmp_path))] == [4]


def test_files_and_directories_are_fsynced_before_the_rename(tmp_path, monkeypatch):
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to name what an fd points at")
    events = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        events.append(("rename", os.path.realpath(src)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    final = _save(str(tmp_path), 5, _model())
    tmp = os.path.realpath(final) + ".tmp"
    renamed = events.index(("rename", tmp))
    synced = {path for kind, path in events[:renamed] if kind == "fsync"}
    for name in ("model.safetensors", "ema.safetensors", "state.pt", "manifest.json"):
        assert os.path.join(tmp, name) in synced, name
    assert tmp in synced  # the directory's entries
    assert ("fsync", os.path.dirname(tmp)) in events[renamed:]  # and the rename itself
    with open(os.path.join(final, "manifest.json")) as f:
        assert set(json.load(f)["files"]) == {"model.safetensors", "ema.safetensors", "state.pt"}


def test_set_aside_renames_every_checkpoint(tmp_path):
    m = _model()
    for step in (1, 2):
        _save(str(tmp_path), step, m)
    moved = ckpt.set_aside(str(tmp_path))
    assert sorted(os.path.basename(p) for p in moved) == ["step_00000001.unreadable", "step_00000002.unreadable"]
    assert ckpt.list_checkpoints(str(tmp_path)) == []


def test_architecture_mismatch_lists_tensors(tmp_path):
    path = _save(str(tmp_path), 1, _model(width=4))
    sd, _, _ = ckpt.load_checkpoint(path)
    with pytest.raises(ckpt.CheckpointError) as e:
        ckpt.check_same_architecture(_model(width=5), sd)
    assert "0.weight" in str(e.value) and "1.bias" in str(e.value)
    with pytest.raises(ckpt.CheckpointError, match="0.weight"):
        ckpt.load_matching(_model(width=5), sd)


def test_load_matching_reports_loaded_and_initialised(tmp_path):
    small = _model()
    path = _save(str(tmp_path), 1, small)
    big = _model(extra=True)
    loaded, initialised = ckpt.load_matching(big, load_file(os.path.join(path, "model.safetensors")))
    assert set(loaded) == set(small.state_dict())
    assert set(initialised) == {"2.weight", "2.bias"}
    for k in loaded:
        assert torch.equal(big.state_dict()[k], small.state_dict()[k])
    # The reverse direction (checkpoint has tensors the model lacks) is a different architecture.
    with pytest.raises(ckpt.CheckpointError, match="2.weight"):
        ckpt.load_matching(_model(), big.state_dict())


def test_resolve_weights_takes_an_export_directory(tmp_path):
    (tmp_path / "config.gin").write_text("")
    (tmp_path / ckpt.MODEL_FILE).write_bytes(b"")
    assert layout.resolve_weights(str(tmp_path)) == str(tmp_path / ckpt.MODEL_FILE)  # its weights are the EMA
    (tmp_path / "config.gin").unlink()
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint found"):
        layout.resolve_weights(str(tmp_path))  # without config.gin it is no export


def test_resolve_weights_of_a_workdir_is_the_newest_intact_checkpoint(tmp_path, caplog):
    workdir = str(tmp_path)
    _save(workdir, 1, _model())
    newest = _save(workdir, 2, _model())
    assert layout.resolve_weights(workdir) == os.path.join(newest, layout.EMA_FILE)
    assert layout.resolve_weights(workdir, use_ema=False) == os.path.join(newest, layout.MODEL_FILE)
    assert layout.resolve_weights(newest, use_ema=False) == os.path.join(newest, layout.MODEL_FILE)  # a step dir
    flip_bit_in_payload(os.path.join(newest, layout.EMA_FILE))
    older = layout.step_dir(workdir, 1)
    assert layout.resolve_weights(workdir) == os.path.join(older, layout.EMA_FILE)
    assert "ema.safetensors does not match its sha256" in caplog.text
    assert layout.resolve_weights(workdir, use_ema=True) == os.path.join(older, layout.EMA_FILE)
    os.remove(os.path.join(older, "manifest.json"))  # an unverifiable checkpoint is read in full instead
    with open(os.path.join(older, layout.EMA_FILE), "r+b") as f:
        f.truncate(10)
    with pytest.raises(layout.NoCheckpointError, match="no checkpoint found") as err:
        layout.resolve_weights(workdir)
    assert isinstance(err.value, FileNotFoundError)


def test_steps_past_eight_digits_are_listed_in_step_order(tmp_path):
    for step in (2, 123_456_789):
        _save(str(tmp_path), step, _model())
    assert layout.step_dir(str(tmp_path), 123_456_789).endswith("step_123456789")
    assert [s for s, _ in layout.list_checkpoints(str(tmp_path))] == [123_456_789, 2]


def test_strict_load_lists_every_difference_in_one_report():
    small, big = _model(width=4), _model(width=5, extra=True)
    with pytest.raises(layout.ArchitectureMismatch) as e:
        layout.load_state_strict(small, big.state_dict(), "export/model.safetensors")
    text = str(e.value)
    assert isinstance(e.value, ValueError) and isinstance(e.value, layout.CheckpointError)
    assert text.startswith("export/model.safetensors does not match the model's architecture:")
    assert "0.weight: checkpoint (5, 3) vs model (4, 3)" in text and "not in the model (2): 2.weight, 2.bias" in text
    layout.load_state_strict(big, big.state_dict(), "same")  # an exact fit loads


def _two_heads(seed=0):
    torch.manual_seed(seed)
    return nn.ModuleDict({"used": nn.Linear(3, 4), "frozen": nn.Linear(3, 4), "idle": nn.Linear(3, 4)})


def _lamb_steps(model, opt, steps, start=0):
    model["frozen"].requires_grad_(False)
    for i in range(start, start + steps):
        x = torch.randn(5, 3, generator=torch.Generator().manual_seed(i))
        # "idle" joins in only from step 3 on: before that it has no gradient and no optimizer state.
        out = model["used"](x) + model["frozen"](x) + (model["idle"](x) if i >= 3 else 0)
        out.square().mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def test_resume_with_parameters_that_have_no_optimizer_state():
    """A frozen parameter, and one that has not had a gradient yet, do not make the optimizer state
    unloadable, and the resumed run continues exactly like the uninterrupted one."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    from hpdm.trainers.lamb import build_optimizer

    reference = _two_heads()
    ref_opt = build_optimizer(reference)
    _lamb_steps(reference, ref_opt, 2)
    # A deep copy, as from disk: the state dicts share their tensors with the live optimizer.
    model_sd, optim_sd = copy.deepcopy(get_state_dict(reference, ref_opt, options=StateDictOptions(full_state_dict=True)))
    assert not any(k.startswith(("frozen.", "idle.")) for k in optim_sd["state"])

    resumed = _two_heads(seed=1)
    resumed_opt = build_optimizer(resumed)
    resumed["frozen"].requires_grad_(False)
    ckpt.load_model_and_optimizer(resumed, resumed_opt, model_sd, optim_sd)
    assert len(resumed_opt.state) == len(ref_opt.state)
    _lamb_steps(reference, ref_opt, 3, start=2)
    _lamb_steps(resumed, resumed_opt, 3, start=2)
    for (name, a), b in zip(reference.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), name
