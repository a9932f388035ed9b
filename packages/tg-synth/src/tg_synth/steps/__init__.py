"""The pipeline's steps, one module each: recognize (1), ground (2), relate (3), generate (4).

Step 5, the filters, are plain functions in ``tg_synth.filters``; step 4's sample building is in
``tg_synth.qa``.
"""

STEPS = ("load", "recognize", "ground", "relate", "refer", "converse", "describe")
