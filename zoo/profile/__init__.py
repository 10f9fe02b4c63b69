"""Measuring models: parameter counts, FLOPs/MACs (correct for attention ops), throughput, memory."""
from .flops import count_macs, count_params
