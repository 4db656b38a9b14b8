"""Named training recipes: starting points users pick instead of writing a config."""

from __future__ import annotations

from typing import Any

# The demo: `tiny` on the digits, both stages, about 10 minutes on one CPU thread here, to the
# prompt accuracy bench/quality_digits.py reports. Why these numbers (bench/results/quality_ablations.json):
# the UNet learns the prompt only after ~25,000 images at lr 1e-3, so the `tiny` UNet is the one
# that sees 4x the images per second (no attention at 8x8, channels 32/64), at lr 3e-3.
DEMO: dict[str, Any] = {
    "preset": "tiny",
    "stage": "all",
    "dataset": "digits",
    "vae": {"steps": 650, "batch_size": 32, "lr": 1e-3, "warmup_steps": 20},
    "unet": {"steps": 2400, "batch_size": 32, "lr": 3e-3, "warmup_steps": 20, "caption_dropout": 0.1},
    "validate_every": 200,
    "sample_every": 600,
    "checkpoint_every": 400,
    "sample_guidance": 3.0,
}

# The first run a new user sees, in under 5 minutes: already draws the ten digits as prompted. The
# digits need few VAE steps (val PSNR 26 dB after 100); the time goes to UNet images.
QUICK_DEMO: dict[str, Any] = {
    **DEMO,
    "vae": {**DEMO["vae"], "steps": 100},
    "unet": {**DEMO["unet"], "steps": 1200},
    "validate_every": 100,
    "sample_every": 300,
    "checkpoint_every": 300,
}

# The built-in Fashion-MNIST (`studio dataset import --builtin fashion-mnist`): what
# bench/quality_fashion.py trains and reports, in about 30 minutes on one CPU thread here.
# Small batches: at a fixed image budget, more updates reconstruct better (VAE val PSNR 26.4 dB at
# batch 8 against 24.2 dB at batch 32, over the same 20,800 images). The text encoder trains: a
# frozen random one leaves prompts with unseen templates unconditioned (prompt accuracy 0.21 on
# "an image of …" against 0.88 when it trains; Fréchet distance 60.9 against 33.2 at guidance 2).
# The UNet is `tiny-wide`: what made the digits learn the prompt (the narrow `tiny` UNet on more
# images at lr 3e-3) scored worse here (accuracy 0.74-0.82, Fréchet 3.3-7.0x the real floor at
# guidance 2; more images made it worse). Its 8 latent channels and attention only at 4x4 alone
# lost the prompt on words the captions never had ("an image of …" 0.39); caption noise (random
# words and marks in 40% of the captions) brought the whole recipe to 0.886 / 2.14x / coverage
# 0.866 at guidance 2, from 0.865 / 2.6x / 0.82 (quality_ablations.json has every row).
# ε-prediction stays: v-prediction on a zero-terminal-SNR schedule learned the prompt better (0.95
# at guidance 2.5) but its Fréchet distance stayed at 2.6x or more at every guidance; caption
# dropout stays 0.1, as 0.2 was worse on every figure. The UNet trains on batches of 32 at lr 2e-3:
# 1.23x the images of batch 16 in the same time (80 against 63 images/s), and better on every figure
# at guidance 2 (0.909 / 1.53x / 0.889 against 0.886 / 2.14x / 0.866); lr 3e-3, or batches of 64,
# followed the prompt less well (0.87 and 0.84). The VAE's KL weight is 1e-3 (from 1e-6): a smoother
# latent space at no cost in reconstruction (val PSNR 28.3 dB either way) raised coverage at every
# guidance (0.916 / 0.922 / 0.89 at 2 / 2.5 / 3, from 0.889 / 0.867 / 0.845) with a lower Fréchet
# distance from 2.5 on (1.61x, 2.02x, from 1.73x, 2.23x); 3e-3 lost accuracy (0.85 at guidance 2).
FASHION: dict[str, Any] = {
    **DEMO,
    "preset": "tiny-wide",
    "dataset": "fashion-mnist",
    "vae": {"steps": 2600, "batch_size": 8, "lr": 2e-3, "warmup_steps": 50, "kl_weight": 1e-3},
    "unet": {"steps": 2400, "batch_size": 32, "lr": 2e-3, "warmup_steps": 50, "caption_dropout": 0.1, "caption_noise": 0.4, "train_text_encoder": True},
    "sample_every": 600,
    "checkpoint_every": 300,
    "evaluate": {"n": 200},
}

# Subject fine-tuning (DreamBooth) with LoRA, after diffusers' train_dreambooth_lora: a handful of
# photos of one subject, all captioned with a rare token ("sks"), plus class images the base
# generates first so the class keeps its look. The placeholders (base_model: a local Stable
# Diffusion folder; dataset: the subject's photos; the prompts) are the user's to fill in.
SUBJECT: dict[str, Any] = {
    "preset": "finetune",
    "base_model": "path/to/base-model",
    "stage": "unet",
    "dataset": "my-subject",
    "unet": {"steps": 400, "batch_size": 1, "lr": 1e-4, "lr_schedule": "constant", "warmup_steps": 0, "caption_dropout": 0.0, "lora_rank": 8},
    "subject": {"instance_prompt": "a photo of sks dog", "class_prompt": "a photo of a dog", "prior_preservation": True, "prior_loss_weight": 1.0, "num_class_images": 100},
    "validate_every": 50,
    "sample_every": 100,
    "checkpoint_every": 100,
    "sample_guidance": 7.5,
}

RECIPES = {"demo": DEMO, "quick-demo": QUICK_DEMO, "fashion": FASHION, "subject": SUBJECT}
DESCRIPTIONS = {
    "demo": "the digits demo: tiny model, both stages, about 10 minutes on a CPU",
    "quick-demo": "the digits demo in under 5 minutes: already draws the digit each prompt names",
    "fashion": "Fashion-MNIST (import it on the Datasets page first): the quality benchmark's recipe",
    "subject": "one subject from a few photos (DreamBooth, LoRA rank 8, prior preservation): set your base model, dataset and prompts",
}
