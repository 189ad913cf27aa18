// AMX-BF16 tiles for the bf16 GEMMs of several tokens (prefill, batches): the avx512bf16 table otherwise.
// Compiled with -mamx-tile -mamx-bf16 besides the avx512bf16 flags; called only where cpuid, XCR0 and the
// kernel's permission (arch_prctl ARCH_REQ_XCOMP_PERM, requested once per process by isa.cc) allow it.
//
// C[n, m] += W[n, k] X[m, k]: the A tile is 16 weight rows x 32 bf16 read in place (row-major, as stored: no
// weight repacking), the B tiles the activations' bf16 hi and lo parts (bf16_split.h) packed per call in AMX's
// pair layout (B[k / 2][m][k % 2], 16 tokens per tile), C 16 weight rows x 16 tokens in float32. Each output is one
// tile element accumulated in a fixed order (per 32 inputs: hi, then lo), so the split of rows over threads does not
// change it. Used when a call has >= kMinTokens tokens, K a multiple of 32 and >= 16 weight rows; the rows past the
// last whole 16 and every other call run avx512bf16's kernel on the same split activations.
#include <immintrin.h>

#include "bf16_split.h"

namespace mixtral_cpu {
namespace {

constexpr int kMinTokens = 16;

struct TileConfig {  // palette 1 (the layout LDTILECFG reads)
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// tmm0, tmm1: C of two token blocks; tmm2: A (weights); tmm3 / tmm4: B hi / lo of block 0; tmm5 / tmm6: of block 1
void configure() {
  TileConfig cfg;
  for (int t = 0; t < 7; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
}

struct AmxScratch {
  std::vector<uint16_t> hi, lo;
  std::vector<uint32_t> packed;  // [blocks][2 (hi, lo)][Kp / 32][16 pairs][16 tokens]
  float c[2][16][16];
};

// the split rows (M x Kp bf16) -> tiles of 16 tokens (zero past M): tile (b, part, chunk) row p, column t holds
// the pair k = chunk * 32 + 2p, 2p + 1 of token b * 16 + t
void pack(const uint16_t* hi, const uint16_t* lo, int M, int Kp, uint32_t* out) {
  const int chunks = Kp / 32, blocks = (M + 15) / 16;
  const size_t tile = 256, per_part = static_cast<size_t>(chunks) * tile;
  for (int b = 0; b < blocks; ++b)
    for (int part = 0; part < 2; ++part) {
      const uint16_t* src = part ? lo : hi;
      uint32_t* dst = out + (static_cast<size_t>(b) * 2 + part) * per_part;
      for (int t = 0; t < 16; ++t) {
        const int m = b * 16 + t;
        if (m >= M) {
          for (int c = 0; c < chunks; ++c)
            for (int p = 0; p < 16; ++p) dst[c * tile + p * 16 + t] = 0;
          continue;
        }
        const uint32_t* row = reinterpret_cast<const uint32_t*>(src + static_cast<size_t>(m) * Kp);
        for (int c = 0; c < chunks; ++c)
          for (int p = 0; p < 16; ++p) dst[c * tile + p * 16 + t] = row[c * 16 + p];
      }
    }
}

inline void store(const float (&c)[16][16], int tokens, float* y, size_t ldy) {
  for (int t = 0; t < tokens; ++t)
    for (int r = 0; r < 16; ++r) y[t * ldy + r] = c[r][t];
}

void gemm_bf16(const FloatGemm& g) {
  const int rows = g.n1 - g.n0;
  if (g.M < kMinTokens || g.K % 32 != 0 || rows < 16) return bf16::gemm(g);
  thread_local AmxScratch s;
  const int Kp = g.K, chunks = Kp / 32, blocks = (g.M + 15) / 16;
  s.hi.resize(static_cast<size_t>(g.M) * Kp);
  s.lo.resize(static_cast<size_t>(g.M) * Kp);
  bf16::split_rows(g, Kp, s.hi.data(), s.lo.data());
  const size_t per_part = static_cast<size_t>(chunks) * 256;
  s.packed.resize(static_cast<size_t>(blocks) * 2 * per_part);
  pack(s.hi.data(), s.lo.data(), g.M, Kp, s.packed.data());

  configure();
  const uint16_t* weights = static_cast<const uint16_t*>(g.w);
  const size_t stride = static_cast<size_t>(g.K) * sizeof(uint16_t);
  const int whole = rows / 16 * 16;
  for (int n = g.n0; n < g.n0 + whole; n += 16) {
    const uint16_t* a = weights + static_cast<size_t>(n) * g.K;
    float* y = g.y + (n - g.n0);
    for (int b = 0; b < blocks; b += 2) {
      const bool two = b + 1 < blocks;
      const uint32_t* b0 = s.packed.data() + static_cast<size_t>(b) * 2 * per_part;
      const uint32_t* b1 = b0 + 2 * per_part;
      _tile_zero(0);
      _tile_zero(1);
      for (int c = 0; c < chunks; ++c) {
        _tile_loadd(2, a + c * 32, stride);
        _tile_loadd(3, b0 + c * 256, 64);
        _tile_loadd(4, b0 + per_part + c * 256, 64);
        _tile_dpbf16ps(0, 2, 3);
        _tile_dpbf16ps(0, 2, 4);
        if (two) {
          _tile_loadd(5, b1 + c * 256, 64);
          _tile_loadd(6, b1 + per_part + c * 256, 64);
          _tile_dpbf16ps(1, 2, 5);
          _tile_dpbf16ps(1, 2, 6);
        }
      }
      _tile_stored(0, s.c[0], 64);
      store(s.c[0], std::min(16, g.M - b * 16), y + static_cast<size_t>(b) * 16 * g.ldy, g.ldy);
      if (two) {
        _tile_stored(1, s.c[1], 64);
        store(s.c[1], std::min(16, g.M - (b + 1) * 16), y + static_cast<size_t>(b + 1) * 16 * g.ldy, g.ldy);
      }
    }
  }
  _tile_release();
  if (whole < rows) {  // the last rows (fewer than 16) through the vector kernel
    FloatGemm tail = g;
    tail.n0 = g.n0 + whole;
    tail.y = g.y + whole;
    bf16::gemm_split(tail, s.hi.data(), s.lo.data(), Kp);
  }
}

}  // namespace

const Kernels& kernels_amx() {
  static const Kernels k = [] {
    Kernels table = kernels_avx512bf16();
    table.name = "amx";
    table.gemm_bf16 = &gemm_bf16;
    return table;
  }();
  return k;
}

}  // namespace mixtral_cpu
