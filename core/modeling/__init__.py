"""Models: presets built from config, the offline CLIP tokenizer, diffusers-layout save/load."""
