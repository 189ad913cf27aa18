// AVX-512 with AVX512-BF16: the avx512 table, its bf16 GEMM through vdpbf16ps on split activations
// (bf16_split.h). Compiled with -mavx512bf16 besides the avx512 flags; called only where cpuid says the CPU has
// it (isa.cc).
#include "bf16_split.h"

namespace mixtral_cpu {

const Kernels& kernels_avx512bf16() {
  static const Kernels k = [] {
    Kernels table = kernels_avx512();
    table.name = "avx512bf16";
    table.gemm_bf16 = &bf16::gemm;
    return table;
  }();
  return k;
}

}  // namespace mixtral_cpu
