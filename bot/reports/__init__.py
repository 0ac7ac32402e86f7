"""Supervisors' numbers: ``/desk stats`` and ``deskbot report`` both use :mod:`.metrics`."""
