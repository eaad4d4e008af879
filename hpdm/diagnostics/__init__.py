"""Checks of what a model trained on the built-in synthetic videos (``hpdm.data.synthetic``) has learnt.

The synthetic source has a known structure: one object of a class's colour and shape, moving on a
straight line at constant size. These tools read that structure back from a model's samples and
denoiser predictions, to locate where training falls short (issue 8). They are not evaluation
metrics (``hpdm.metrics``, ``hpdm.evaluation``: FVD and friends on any data set) and mean nothing on
other data.

* ``synthetic_content``: reads colour, shape, object count, track and size of sampled videos;
* ``label_sensitivity``: how much of the colour and the shape level 0 takes from the class label;
* ``motion_retention``: how much of a real video's motion level 0's prediction keeps per noise level;
* ``denoising``: the per-level denoising error on real patch hierarchies;
* ``level0_ablation``: trains level 0 alone and follows the figures above, to compare architectures.

The command line is ``hpdm-diagnose COMMAND`` (``hpdm.cli.diagnose``).
"""
