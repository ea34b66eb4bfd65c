"""FER2013 class names in the dataset's index order, and the aliases people use for them.

Source: Goodfellow et al. 2013, "Challenges in Representation Learning" (arXiv:1307.0414);
Kaggle's fer2013.csv documents ``emotion`` as 0=Angry, 1=Disgust, 2=Fear, 3=Happy, 4=Sad,
5=Surprise, 6=Neutral.
"""

CLASS_NAMES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
NUM_CLASSES = len(CLASS_NAMES)

# Folder and column names seen in the wild (FER+ uses the noun forms).
ALIASES: dict[str, int] = {
    "angry": 0, "anger": 0,
    "disgust": 1, "disgusted": 1,
    "fear": 2, "fearful": 2, "afraid": 2,
    "happy": 3, "happiness": 3, "joy": 3,
    "sad": 4, "sadness": 4,
    "surprise": 5, "surprised": 5,
    "neutral": 6,
}

# Usage column of fer2013.csv -> our split names.
USAGE_TO_SPLIT: dict[str, str] = {
    "Training": "train",
    "PublicTest": "public_test",
    "PrivateTest": "private_test",
}
SPLIT_TITLES: dict[str, str] = {
    "train": "Training",
    "validation": "Validation (per member)",
    "public_test": "PublicTest",
    "private_test": "PrivateTest",
}


def class_index(name: str) -> int | None:
    """Index of a class name or alias, any case; None when FER2013 has no such class."""
    return ALIASES.get(name.strip().lower())
