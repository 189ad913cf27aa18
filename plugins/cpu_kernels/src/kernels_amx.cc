// AMX-BF16 tiles for the float32 and bf16 GEMMs of several tokens (prefill, batches): the avx512 table otherwise.
// Compiled with -mamx-tile -mamx-bf16 besides the avx512bf16 flags; called only where cpuid, XCR0 and the
// kernel's permission (arch_prctl ARCH_REQ_XCOMP_PERM, requested once per process by isa.cc) allow it.
//
// C[m, n] += X[m, k] W[n, k] on AMX-BF16 tiles, for the float32 and bf16 GEMMs of several tokens. The activations
// are split into bf16 hi + lo parts (bf16_split.h: together within 2^-18 of each value); bf16 weights are exact in
// bf16, float32 weights are split the same way and the products hi.hi + lo.hi + hi.lo kept (the dropped lo.lo and
// the parts' rounding leave each product within ~1e-5 relative: float32-level results, not bf16 ones).
// A tiles: 16 tokens x 32 inputs of one activation part, read in place from the split rows; B tiles: 32 inputs x 16
// weight rows in AMX's pair layout (B[k / 2][n][k % 2]), packed per call from the rows as stored (each weight is
// packed once per layer, however many tokens); C: 16 tokens x 16 weight rows in float32, stored straight into y.
// Each output is one tile element accumulated in a fixed order (per 32 inputs, the products above in that order),
// so the split of rows over threads does not change it. Used when a call has >= kMinTokens tokens, K a multiple of
// 32 and >= 16 weight rows; the rows past the last whole 16 and every other call run the avx512 kernels (decode
// reads weights from memory: tiles would not make it faster).
#include <immintrin.h>

#include <type_traits>

#include "amx_tiles.h"
#include "bf16_split.h"

namespace mixtral_cpu {
namespace {

constexpr int kMinTokens = 16;

// tmm0..3: C of two token blocks x two 16-row weight blocks (C[2 * m + n]); tmm4: A (one part of one token block);
// tmm5, tmm6: B (one part of the two weight blocks). Four independent accumulations keep the tile unit busy.
void configure() {
  TileConfig cfg;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

struct AmxScratch {
  std::vector<uint16_t> hi, lo;   // [M rounded up to 16][K]: rows past M zero
  std::vector<uint32_t> packed;   // [2 blocks][2 parts][K / 32 chunks][16 pairs][16 rows]
  float c[16][16];
};

// 16 weight rows (row stride K) -> their B tiles: tile c row p, column r holds the pair k = 32c + 2p, +1 of row r
void pack(const uint16_t* w, int K, uint32_t* hi, uint32_t* /*lo: bf16 weights are exact*/) {
  __m512i rows[16];
  for (int c = 0; c < K / 32; ++c) {
    for (int r = 0; r < 16; ++r) rows[r] = _mm512_loadu_si512(w + static_cast<size_t>(r) * K + c * 32);
    transpose16(rows, hi + c * 256);
  }
}

void pack(const float* w, int K, uint32_t* hi, uint32_t* lo) {  // float32 rows: their hi and lo parts
  __m512i h[16], l[16];
  for (int c = 0; c < K / 32; ++c) {
    for (int r = 0; r < 16; ++r) {
      const float* row = w + static_cast<size_t>(r) * K + c * 32;
      const __m512 v0 = _mm512_loadu_ps(row), v1 = _mm512_loadu_ps(row + 16);
      h[r] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(v1, v0));  // k = 0..31 in order
      const __m512 r0 = _mm512_sub_ps(v0, bf16::widen16(_mm512_castsi512_si256(h[r])));
      const __m512 r1 = _mm512_sub_ps(v1, bf16::widen16(_mm512_extracti64x4_epi64(h[r], 1)));
      l[r] = reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(r1, r0));
    }
    transpose16(h, hi + c * 256);
    transpose16(l, lo + c * 256);
  }
}

// the first `tokens` rows of C (16 tokens x 16 rows) stored to the scratch, into y
inline void copy_rows(const AmxScratch& s, int tokens, float* y, size_t ldy) {
  for (int m = 0; m < tokens; ++m) std::copy(s.c[m], s.c[m] + 16, y + m * ldy);
}

// tile T (a literal: the intrinsics name their tile in the instruction) to y: straight when all 16 tokens are
// real, else through the scratch
#define MIXTRAL_STORE_TILE(T, tokens, y, ldy)                      \
  do {                                                             \
    if ((tokens) == 16) {                                          \
      _tile_stored(T, (y), (ldy) * sizeof(float));                 \
    } else {                                                       \
      _tile_stored(T, s.c, 64);                                    \
      copy_rows(s, (tokens), (y), (ldy));                          \
    }                                                              \
  } while (0)

template <class WT>
void gemm_tiles(const FloatGemm& g, void (*vector_kernel)(const FloatGemm&)) {
  constexpr bool split_weights = std::is_same_v<WT, float>;
  const int rows = g.n1 - g.n0;
  if (g.M < kMinTokens || g.K % 32 != 0 || rows < 16) return vector_kernel(g);
  thread_local AmxScratch s;
  const int K = g.K, chunks = K / 32, blocks = (g.M + 15) / 16;
  const size_t padded = static_cast<size_t>(blocks) * 16 * K, real = static_cast<size_t>(g.M) * K;
  const size_t per_part = static_cast<size_t>(chunks) * 256;
  s.hi.resize(padded);
  s.lo.resize(padded);
  std::fill(s.hi.begin() + real, s.hi.end(), 0);
  std::fill(s.lo.begin() + real, s.lo.end(), 0);
  bf16::split_rows(g, K, s.hi.data(), s.lo.data());
  s.packed.resize(4 * per_part);
  uint32_t* b0 = s.packed.data();  // block 0 hi, lo; block 1 hi, lo
  uint32_t* b1 = b0 + 2 * per_part;

  configure();
  const WT* weights = static_cast<const WT*>(g.w);
  const size_t stride = static_cast<size_t>(K) * sizeof(uint16_t);
  const int whole = rows / 16 * 16;
  for (int n = g.n0; n < g.n0 + whole; n += 32) {
    const bool two = n + 16 < g.n0 + whole;
    pack(weights + static_cast<size_t>(n) * K, K, b0, b0 + per_part);
    if (two) pack(weights + static_cast<size_t>(n + 16) * K, K, b1, b1 + per_part);
    for (int b = 0; b < blocks; b += 2) {
      const bool two_m = b + 1 < blocks;
      const size_t part_rows = static_cast<size_t>(16) * K;  // one token block of one part
      const uint16_t* hi = s.hi.data() + static_cast<size_t>(b) * part_rows;
      const uint16_t* lo = s.lo.data() + static_cast<size_t>(b) * part_rows;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      // per 32 inputs: every C gets A hi . B hi, A lo . B hi (and float32 weights: A hi . B lo), in that order
#define MIXTRAL_AMX_ROW(C0, C1, A)                \
  do {                                            \
    _tile_loadd(4, (A), stride);                  \
    _tile_dpbf16ps(C0, 4, 5);                     \
    if (two) _tile_dpbf16ps(C1, 4, 6);            \
  } while (0)
      for (int c = 0; c < chunks; ++c) {
        _tile_loadd(5, b0 + c * 256, 64);
        if (two) _tile_loadd(6, b1 + c * 256, 64);
        MIXTRAL_AMX_ROW(0, 1, hi + c * 32);
        MIXTRAL_AMX_ROW(0, 1, lo + c * 32);
        if (two_m) {
          MIXTRAL_AMX_ROW(2, 3, hi + part_rows + c * 32);
          MIXTRAL_AMX_ROW(2, 3, lo + part_rows + c * 32);
        }
        if constexpr (split_weights) {
          _tile_loadd(5, b0 + per_part + c * 256, 64);
          if (two) _tile_loadd(6, b1 + per_part + c * 256, 64);
          MIXTRAL_AMX_ROW(0, 1, hi + c * 32);
          if (two_m) MIXTRAL_AMX_ROW(2, 3, hi + part_rows + c * 32);
        }
      }
#undef MIXTRAL_AMX_ROW
      float* y = g.y + static_cast<size_t>(b) * 16 * g.ldy + (n - g.n0);
      const int tokens = std::min(16, g.M - b * 16);
      MIXTRAL_STORE_TILE(0, tokens, y, g.ldy);
      if (two) MIXTRAL_STORE_TILE(1, tokens, y + 16, g.ldy);
      if (two_m) {
        const int more = std::min(16, g.M - (b + 1) * 16);
        MIXTRAL_STORE_TILE(2, more, y + 16 * g.ldy, g.ldy);
        if (two) MIXTRAL_STORE_TILE(3, more, y + 16 * g.ldy + 16, g.ldy);
      }
    }
  }
  _tile_release();
  if (whole < rows) {  // the last rows (fewer than 16) through the vector kernel
    FloatGemm tail = g;
    tail.n0 = g.n0 + whole;
    tail.y = g.y + whole;
    vector_kernel(tail);
  }
}

void gemm_f32(const FloatGemm& g) { gemm_tiles<float>(g, kernels_avx512().gemm_f32); }
void gemm_bf16(const FloatGemm& g) { gemm_tiles<uint16_t>(g, kernels_avx512().gemm_bf16); }

}  // namespace

const Kernels& kernels_amx() {
  static const Kernels k = [] {
    Kernels table = kernels_avx512();
    table.name = "amx";
    table.gemm_f32 = &gemm_f32;
    table.gemm_bf16 = &gemm_bf16;
    table.gemm_q8 = &amx_gemm_q8;
    table.gemm_q4 = &amx_gemm_q4;
    return table;
  }();
  return k;
}

}  // namespace mixtral_cpu
