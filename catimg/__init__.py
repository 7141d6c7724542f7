"""catimg: cost-aware routing for local text-to-image generation.

Implements "Cost-Aware Routing for Efficient Text-To-Image Generation" (CATImage, arXiv 2506.14753).
Nothing heavy is imported here: torch, diffusers and transformers load only inside the functions that need
them.
"""

__version__ = "0.1.0"
