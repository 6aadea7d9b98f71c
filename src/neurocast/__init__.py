"""neurocast: forecast neural population activity.

Two model families share one data type (:class:`neurocast.data.Recording`), one run
directory layout and one command line (``neurocast``):

* latent dynamics of a connectome-constrained system (encoder -> evolver -> decoder);
* population-conditioned multi-session forecasting with test-time adaptation (POCO).
"""

__version__ = "0.1.0"
