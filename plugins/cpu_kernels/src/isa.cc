#include "isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <iterator>
#include <stdexcept>

namespace mixtral_cpu {
namespace {

struct Features {
  bool avx2 = false, fma = false, avx512 = false, avx512bf16 = false, amx = false;
};

// AMX tile data is off for a process until it asks the kernel (Linux >= 5.16): once, at the first cpuid probe
bool request_amx() {
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

unsigned long long xgetbv0() {
  unsigned eax, edx;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

Features detect() {
  Features f;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = c & (1u << 27), fma = c & (1u << 12);
  if (!osxsave) return f;
  const unsigned long long xcr0 = xgetbv0();
  const bool ymm = (xcr0 & 0x6) == 0x6, zmm = (xcr0 & 0xe6) == 0xe6;
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return f;
  const bool avx2 = b & (1u << 5), avx512f = b & (1u << 16), avx512bw = b & (1u << 30), avx512vl = b & (1u << 31);
  const bool vnni = c & (1u << 11), amx_bf16 = d & (1u << 22), amx_tile = d & (1u << 24);
  const bool amx_int8 = d & (1u << 25);
  f.avx2 = f.fma = ymm && avx2 && fma;
  f.avx512 = f.avx2 && zmm && avx512f && avx512bw && avx512vl && vnni;
  if (!f.avx512 || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return f;
  f.avx512bf16 = a & (1u << 5);
  const bool tiles = (xcr0 & (3ull << 17)) == (3ull << 17);  // XTILECFG, XTILEDATA enabled by the OS
  f.amx = f.avx512bf16 && amx_bf16 && amx_int8 && amx_tile && tiles && request_amx();
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

}  // namespace

// fastest first, as measured on a Sapphire Rapids core: avx512bf16's vdpbf16ps runs at one per cycle and the split
// activations take two of them per pair, so it is slower than avx512's widening at prefill and no faster at decode
// (bound by the weight bytes): avx512 comes first, and avx512bf16 runs only when forced
constexpr const char* kIsas[] = {"amx", "avx512", "avx512bf16", "avx2", "portable"};

bool isa_supported(const std::string& isa) {
  if (isa == "portable") return true;
  if (isa == "amx") return features().amx;
  if (isa == "avx512bf16") return features().avx512bf16;
  if (isa == "avx2") return features().avx2;
  if (isa == "avx512") return features().avx512;
  return false;
}

std::string supported_isas() {
  std::string out;
  for (const char* isa : kIsas)
    if (isa_supported(isa)) out += (out.empty() ? "" : ",") + std::string(isa);
  return out;
}

const Kernels& select_kernels() {
  const char* env = std::getenv("MIXTRAL_TRT_CPU_ISA");
  std::string isa = env && *env ? env : "";
  if (isa.empty())
    for (const char* best : kIsas)
      if (isa_supported(best)) {
        isa = best;
        break;
      }
  if (std::find(std::begin(kIsas), std::end(kIsas), isa) == std::end(kIsas))
    throw std::runtime_error("MIXTRAL_TRT_CPU_ISA=" + isa + ": choose one of amx, avx512bf16, avx512, avx2, portable");
  if (!isa_supported(isa))
    throw std::runtime_error("MIXTRAL_TRT_CPU_ISA=" + isa + ": this CPU runs only " + supported_isas());
  if (isa == "amx") return kernels_amx();
  if (isa == "avx512bf16") return kernels_avx512bf16();
  if (isa == "avx512") return kernels_avx512();
  if (isa == "avx2") return kernels_avx2();
  return kernels_portable();
}

}  // namespace mixtral_cpu
