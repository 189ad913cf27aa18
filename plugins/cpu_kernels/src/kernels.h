// The ISA-specific matrix kernels behind the cpu_kernels ops, one table per instruction set.
//
// Every kernel computes y[m, n - n0] = dot(x[idx[m]], w[n]) for m < M and n0 <= n < n1: M activation rows
// (picked from x by idx: the tokens routed to one expert) against a range of weight rows w [N, K] stored
// row-major, exactly as the graph's initializers are (no repacking: each output row streams one contiguous
// weight row). Activations are float32; weights float32, bf16 (widened to float32 in registers), or int8 /
// int4 codes with one float32 scale per block of B inputs, against activations rounded to int8 per block
// (quantize_rows). Each (m, n) dot is computed whole by one call in a fixed order, so the result does not
// depend on how rows are split over threads.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mixtral_cpu {

struct FloatGemm {
  const float* x;       // activations, row r at x + r * ldx
  size_t ldx;
  const int32_t* idx;   // [M] rows of x
  int M;
  const void* w;        // float or bf16 (uint16) weights [N, K]
  int K;
  int n0, n1;           // weight rows [n0, n1)
  float* y;             // y[m * ldy + (n - n0)]
  size_t ldy;
};

struct QuantGemm {
  const int8_t* xq;     // int8 activations, row r at xq + r * ldx (int4: each 32-chunk evens first, then odds)
  const float* xs;      // activation scales, row r at xs + r * ldxs, one per block
  size_t ldx, ldxs;
  const int32_t* idx;
  int M;
  const uint8_t* w;     // codes [N, K * bits / 8] (unsigned, zero point 2^(bits-1))
  const float* ws;      // weight scales [N, K / B]
  int K, B;             // B: block size, a multiple of 32
  int n0, n1;
  float* y;
  size_t ldy;
};

// The weight rows a vector kernel's pass reads: rows [n0, n1) are cut into NR runs of `passes` rows, and pass p
// takes row p of each run, so the NR rows in flight advance as NR sequential streams through memory (NR adjacent
// rows, interleaved within a few KB, left one core streaming bf16 weights at 5.6-8.1 GB/s against 8.1-12 with
// separate runs: the hardware prefetcher follows whole runs; docs/BENCHMARKS.md). Each dot is still computed whole
// by one tile, so the result does not depend on the order. col[j]: output column (row - n0) of stream j, -1 past
// n1, where row[j] repeats a valid row (computed, not written).
template <int NR>
struct StreamRows {
  static int passes(int n0, int n1) { return (n1 - n0 + NR - 1) / NR; }

  int col[NR];
  size_t row[NR];

  StreamRows(int n0, int n1, int passes, int p) {
    for (int j = 0; j < NR; ++j) {
      const int r = j * passes + p;
      col[j] = n0 + r < n1 ? r : -1;
      row[j] = static_cast<size_t>(col[j] < 0 ? n0 + p : n0 + r);
    }
  }
};

// A block of m queries' attention over one kv head for the R query heads that share it (RaggedAttention,
// attention.cc): out[i, r] = softmax_j(q[i, r] . k[s]) v[s] over the slots s query i sees, float32 throughout.
// `idx` is the union of the queries' slots, ascending; `lists[i]` query i's own, ascending (a subset), or null
// for a query with no visible slot, which sees every union slot with equal scores (the mean of their values, as
// the canonical graph's finite mask bias gives it). Each key and value row is read once for the whole block.
// q is already rotated and scaled by D^-0.5. Which GEMM kernel computes the scores depends on m R (amx tiles for
// 16+ rows): a query's last bits depend on its block's size, never on the thread.
constexpr int kMaxAttendQueries = 16, kMaxAttendHeads = 64;  // m, R at most
struct AttendGroup {
  const float* q;              // [m, R, D]
  const float* k;              // key rows of the kv head: slot s at k + s * ldk
  const float* v;              // value rows: slot s at v + s * ldk
  size_t ldk;
  const int32_t* idx;          // [n] union of the block's slots
  const int32_t* const* lists; // [m] each query's slots (counts[i] of them), or null: every union slot, uniformly
  const int* counts;           // [m]
  int n, m, R, D;
  float* scores;               // scratch [m * R, n]
  float* out;                  // query i, head r at out + i * ldo + r * D
  size_t ldo;
  void (*gemm)(const FloatGemm&);  // the table's gemm_f32: the scores of each run of consecutive slots
};

struct Kernels {
  const char* name;
  void (*gemm_f32)(const FloatGemm&);
  void (*gemm_bf16)(const FloatGemm&);
  void (*gemm_q8)(const QuantGemm&);
  void (*gemm_q4)(const QuantGemm&);
  void (*attend)(const AttendGroup&);
};

// one per instruction set (kernels_<isa>.cc, each compiled with its own -m flags)
const Kernels& kernels_portable();
const Kernels& kernels_avx2();
const Kernels& kernels_avx512();
const Kernels& kernels_avx512bf16();  // avx512 + AVX512-BF16 bf16 dots (bf16_split.h)
const Kernels& kernels_amx();         // avx512bf16 + AMX-BF16 tiles for bf16 GEMMs of several tokens
// AMX-INT8 tiles for the int8 / int4 GEMMs of several tokens, the avx512 kernels otherwise (kernels_amx_int8.cc)
void amx_gemm_q8(const QuantGemm& g);
void amx_gemm_q4(const QuantGemm& g);

// x [M, K] (row stride ldx) -> int8 codes and one scale per block of B: scale = max|x| / 127, code =
// round-half-even(x / scale) (as mixtral_ref.quantized.quantize_activations); `perm4` stores each 32-chunk
// as its even elements then its odd ones (the int4 kernels' nibble order). Portable code, any CPU.
void quantize_rows(const float* x, size_t ldx, int M, int K, int B, bool perm4, int8_t* q, size_t ldq, float* s,
                   size_t lds);

}  // namespace mixtral_cpu
