"""Dataset readers, one registered file each (``@register_reader(name, config=...)``): a new corpus is one file
here, its import below, and its label set (``mmemo.labels.register_label_set``)."""

from mmemo.data.readers import emorynlp, hf, manifest, meld  # noqa: F401  (each module registers its reader)
