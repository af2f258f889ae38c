"""Tests of nalox diag and the control socket."""
