"""Models: tokenizers, the VLM (Builder, critic, VLM bricks), segmentation and the edit (inpainting) models."""
