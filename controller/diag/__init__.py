"""Technician diagnostics (`nalox diag`): the command line, board and host checks, the report, restock."""
