"""Facts of the sample contract that every layer shares (ARCHITECTURE.md, "Contracts").

Only constants live here, so the data layer, the losses, the metrics and the
engine can all import them without importing one another.
"""

from typing import Literal, get_args

#: what an experiment trains: one class per image, or one per pixel
Task = Literal["classification", "segmentation"]
TASKS: tuple[str, ...] = get_args(Task)

#: target value (a class index, a mask pixel, or an entry of a float target) that no loss or metric counts;
#: index masks use it for pixels brought in by padding or rotation and for borders a dataset leaves undecided
IGNORE_INDEX = 255
