// Run-time choice of the kernel table (cpuid), overridable by
// MIXTRAL_TRT_CPU_ISA=amx|avx512bf16|avx512|avx2|portable.
#pragma once

#include <string>

#include "kernels.h"

namespace mixtral_cpu {

// "amx" (avx512bf16 + AMX-TILE, AMX-BF16, the process's permission for tile data), "avx512bf16" (avx512 +
// AVX512-BF16), "avx512" (F, BW, VL, VNNI), "avx2" (AVX2 + FMA), "portable": whether this CPU (and OS) runs each
bool isa_supported(const std::string& isa);
// the best supported ISA, or the one MIXTRAL_TRT_CPU_ISA names; throws std::runtime_error (one line) when the
// variable names an unknown or unsupported ISA
const Kernels& select_kernels();
// comma-separated supported ISAs, best first
std::string supported_isas();

}  // namespace mixtral_cpu
