#include "isa.h"

#include <cpuid.h>

#include <cstdlib>
#include <stdexcept>

namespace mixtral_cpu {
namespace {

struct Features {
  bool avx2 = false, fma = false, avx512 = false;
};

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
  const bool vnni = c & (1u << 11);
  f.avx2 = f.fma = ymm && avx2 && fma;
  f.avx512 = f.avx2 && zmm && avx512f && avx512bw && avx512vl && vnni;
  return f;
}

const Features& features() {
  static const Features f = detect();
  return f;
}

}  // namespace

bool isa_supported(const std::string& isa) {
  if (isa == "portable") return true;
  if (isa == "avx2") return features().avx2;
  if (isa == "avx512") return features().avx512;
  return false;
}

std::string supported_isas() {
  std::string out;
  for (const char* isa : {"avx512", "avx2", "portable"})
    if (isa_supported(isa)) out += (out.empty() ? "" : ",") + std::string(isa);
  return out;
}

const Kernels& select_kernels() {
  const char* env = std::getenv("MIXTRAL_TRT_CPU_ISA");
  std::string isa = env && *env ? env : "";
  if (isa.empty()) isa = features().avx512 ? "avx512" : features().avx2 ? "avx2" : "portable";
  if (isa != "avx512" && isa != "avx2" && isa != "portable")
    throw std::runtime_error("MIXTRAL_TRT_CPU_ISA=" + isa + ": choose one of avx512, avx2, portable");
  if (!isa_supported(isa))
    throw std::runtime_error("MIXTRAL_TRT_CPU_ISA=" + isa + ": this CPU runs only " + supported_isas());
  if (isa == "avx512") return kernels_avx512();
  if (isa == "avx2") return kernels_avx2();
  return kernels_portable();
}

}  // namespace mixtral_cpu
