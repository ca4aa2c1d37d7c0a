"""cotlib — reproduce LLaVA-CoT end to end on one GPU: the library behind the notebook course.

One module per pipeline step (see README, "How the code is organised"):
``stages`` (the four-stage format), ``images`` (safe image loading), ``synth`` (synthetic tasks),
``models`` (load real models or build tiny offline twins), ``env`` (fast mode, hardware, seeds),
``checks`` (exercise checkers), ``cli`` (``cotlib demo``, ``cotlib doctor``, ...).
"""

__version__ = "0.1.0"
