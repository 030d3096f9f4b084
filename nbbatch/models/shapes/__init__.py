"""``nbbatch:shapes``: a small Stable Diffusion pipeline trained here, with its data, training and evaluation.

The trained pipeline ships in `WEIGHTS` (a diffusers folder, loaded with `from_pretrained`);
``nbbatch.json`` there holds the settings nbbatch uses for it by default and its vocabulary (the
words of its captions: a prompt with others gets one warning naming them).
"""

from pathlib import Path

NAME = "nbbatch:shapes"
WEIGHTS = Path(__file__).with_name("weights")
