"""The pipeline's entry points and stages."""
