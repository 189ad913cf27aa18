"""mixtral_trt.plugins"""
