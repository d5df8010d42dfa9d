"""napari-cellularity: tumour cellularity assessment of breast H&E slides in napari."""

__version__ = "0.1.0"
