"""FER Ensemble Lab: seeded ensembles of small CNNs for facial-expression recognition (FER2013).

Everything the app shows is computed here; the Streamlit pages only draw. The package never
imports streamlit or altair, and runs headless as ``python -m fer``.
"""

from fer.errors import CheckpointError, ConfigError, DataFormatError, FerError, RunDirError

__version__ = "0.1.0"

__all__ = ["FerError", "DataFormatError", "CheckpointError", "RunDirError", "ConfigError"]
