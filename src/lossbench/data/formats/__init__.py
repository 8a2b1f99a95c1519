"""On-disk dataset formats; importing this package registers each in ``SOURCES``."""

from lossbench.data.formats import (  # noqa: F401
    cifar10,
    csvfile,
    fashion_mnist,
    fashion_mnist_scenes,
    folder,
    oxford_pet,
    seg_folder,
)
