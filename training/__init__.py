"""Training package of napari-cellularity: segmentation, cellularity regressors, fine-tuning."""
