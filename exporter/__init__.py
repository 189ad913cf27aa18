"""mixtral_trt.exporter"""
