"""mixtral_trt.mixtral_ref"""
