"""dep-eval: personalized review generation for lm-evaluation-harness.

Kept import-light on purpose: the lm-eval start-up hook imports this package in every
Python process, so nothing heavy (torch, transformers) may be imported here.
"""

__version__ = "0.1.0"
