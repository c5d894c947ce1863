"""Complexity and log analysis: FLOP counting with the scan/SDPA handles, training-log curves.

``flops`` needs torch (and mmengine for :func:`count_flops`); ``logs`` needs matplotlib for plots.
"""
from .flops import (FlopResult, count_flops, cross_selective_scan_op_handle, extra_op_handles,
                    opaque_scans, sdpa_flop_handle, selective_scan_op_handle)

__all__ = ['FlopResult', 'count_flops', 'cross_selective_scan_op_handle', 'extra_op_handles',
           'opaque_scans', 'sdpa_flop_handle', 'selective_scan_op_handle']
