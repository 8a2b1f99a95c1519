"""On-disk dataset formats; importing this package registers each in ``SOURCES``."""

from lossbench.data.formats import cifar10, csvfile, fashion_mnist, folder, oxford_pet, seg_folder  # noqa: F401
