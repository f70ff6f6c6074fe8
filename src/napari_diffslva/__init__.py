"""napari-diffslva: text-guided sign language video anonymization (DiffSLVA).

The core (everything outside ``_qt``) never imports Qt or napari, and imports heavy
libraries (torch, diffusers, dlib, cv2) inside the functions that need them.
"""

__version__ = "0.1.0"
