"""LevelSet R-CNN: Mask R-CNN with a differentiable, unrolled Chan-Vese level-set refinement."""

__version__ = "0.1.0"
