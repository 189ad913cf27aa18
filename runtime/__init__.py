"""mixtral_trt.runtime"""
