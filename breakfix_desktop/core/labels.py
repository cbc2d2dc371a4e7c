"""Class names, in the fixed order every classifier's logits use."""

CLASS_NAMES = ("glioma", "meningioma", "notumor", "pituitary")
NUM_CLASSES = len(CLASS_NAMES)
#: File extensions the data loader and the app accept as raster images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
#: File extensions read as DICOM (files with the "DICM" marker at byte 128 are DICOM whatever their name).
DICOM_EXTENSIONS = (".dcm", ".dicom")
