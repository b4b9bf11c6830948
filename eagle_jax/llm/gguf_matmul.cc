// y [M, N] = x [M, K] times W [N, K]^T, with W held in its GGUF blocks: an XLA FFI CPU kernel.
//
// A decode step multiplies a few activation rows by every weight matrix once, so float32
// weights make it wait on memory; GGUF's blocks are 5-6x fewer bytes. Each block of 32
// weights is expanded in registers exactly as gguf-py dequantises it (d * q + m, rounded
// twice, no FMA), so the weights equal the float32 copy XLA multiplies and only the
// summation order differs. Output rows are split over XLA's intra-op thread pool.
//
// Blocks [N, K / 32, bytes], the layout GGUF stores (bytes per block names the type):
//   Q4_1 (20 bytes): f16 d, f16 m, 16 bytes q; weight j = d * q_j + m, q_j = low nibble of
//                    byte j (j < 16) or high nibble of byte j - 16.
//   Q8_0 (34 bytes): f16 d, 32 int8 q; weight j = d * q_j.
#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ41Bytes = 20;
constexpr int64_t kQ80Bytes = 34;
// Activation rows multiplied per pass over a weight row: 8 accumulators + 4 weight vectors
// fit AVX2's 16 registers.
constexpr int64_t kRowTile = 8;

inline float HalfToFloat(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, sizeof(h));
  return _cvtsh_ss(h);
}

inline void ExpandQ41(const uint8_t* block, __m256 w[4]) {
  const __m256 d = _mm256_set1_ps(HalfToFloat(block));
  const __m256 m = _mm256_set1_ps(HalfToFloat(block + 2));
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 4));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(q, nibble);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(q, 4), nibble);
  const __m128i parts[4] = {lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)};
  for (int i = 0; i < 4; ++i) {
    const __m256 qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(parts[i]));
    w[i] = _mm256_add_ps(_mm256_mul_ps(d, qf), m);
  }
}

inline void ExpandQ80(const uint8_t* block, __m256 w[4]) {
  const __m256 d = _mm256_set1_ps(HalfToFloat(block));
  for (int i = 0; i < 4; ++i) {
    const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(block + 2 + 8 * i));
    w[i] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q)));
  }
}

inline float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// y[r, n] for R activation rows x[r, :] (row stride k) and one weight row of `blocks`.
// Each row sums into 4 / R accumulators (at least one): FMA latency, not throughput, bounds
// a single chain, and one or two rows alone would wait on it.
template <int R, void (*Expand)(const uint8_t*, __m256*)>
void DotRows(const float* x, int64_t k, const uint8_t* row, int64_t block_bytes, float* y,
             int64_t y_stride) {
  constexpr int kChains = R >= 4 ? 1 : 4 / R;
  __m256 acc[R][kChains];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < kChains; ++c) acc[r][c] = _mm256_setzero_ps();
  for (int64_t b = 0; b < k / kBlock; ++b) {
    __m256 w[4];
    Expand(row + b * block_bytes, w);
    for (int r = 0; r < R; ++r) {
      const float* xb = x + r * k + b * kBlock;
      for (int i = 0; i < 4; ++i) {
        acc[r][i % kChains] = _mm256_fmadd_ps(w[i], _mm256_loadu_ps(xb + 8 * i),
                                              acc[r][i % kChains]);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    __m256 sum = acc[r][0];
    for (int c = 1; c < kChains; ++c) sum = _mm256_add_ps(sum, acc[r][c]);
    y[r * y_stride] = HorizontalSum(sum);
  }
}

template <void (*Expand)(const uint8_t*, __m256*)>
void DotTile(int64_t rows, const float* x, int64_t k, const uint8_t* row, int64_t block_bytes,
             float* y, int64_t y_stride) {
  switch (rows) {
#define EAGLE_CASE(R) \
    case R: return DotRows<R, Expand>(x, k, row, block_bytes, y, y_stride);
    EAGLE_CASE(1) EAGLE_CASE(2) EAGLE_CASE(3) EAGLE_CASE(4)
    EAGLE_CASE(5) EAGLE_CASE(6) EAGLE_CASE(7) EAGLE_CASE(8)
#undef EAGLE_CASE
  }
}

// Weight rows [begin, end) against every activation row.
void MatmulRows(const float* x, int64_t m, int64_t k, const uint8_t* blocks, int64_t n,
                int64_t block_bytes, float* y, int64_t begin, int64_t end) {
  const auto tile = block_bytes == kQ41Bytes ? DotTile<ExpandQ41> : DotTile<ExpandQ80>;
  const int64_t row_bytes = k / kBlock * block_bytes;
  for (int64_t j = begin; j < end; ++j) {
    for (int64_t r = 0; r < m; r += kRowTile) {
      tile(std::min(kRowTile, m - r), x + r * k, k, blocks + j * row_bytes, block_bytes,
           y + r * n + j, n);
    }
  }
}

ffi::Error GgufMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::U8> blocks,
                      ffi::ResultBuffer<ffi::F32> y) {
  const auto xd = x.dimensions(), bd = blocks.dimensions();
  if (xd.size() != 2 || bd.size() != 3) {
    return ffi::Error::InvalidArgument("gguf_matmul: expected x [M, K] and blocks [N, K/32, B]");
  }
  const int64_t m = xd[0], k = xd[1], n = bd[0], block_bytes = bd[2];
  if (bd[1] * kBlock != k || (block_bytes != kQ41Bytes && block_bytes != kQ80Bytes)) {
    return ffi::Error::InvalidArgument(
        "gguf_matmul: blocks must be [N, K/32, 20] (Q4_1) or [N, K/32, 34] (Q8_0)");
  }
  const float* xp = x.typed_data();
  const uint8_t* bp = blocks.typed_data();
  float* yp = y->typed_data();
  // Chunks of weight rows are claimed from a shared counter by this thread and by helpers on
  // XLA's pool; this thread works until none are left, so it never waits on a helper that has
  // not started (XLA may run independent products at once on every pool thread). A helper
  // that starts late finds nothing to claim: the shared state outlives this call.
  struct Work {
    std::atomic<int64_t> next{0}, done{0};
  };
  const auto work = std::make_shared<Work>();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n / 64));
  const int64_t per = (n + chunks - 1) / chunks;
  const auto run = [=] {
    for (int64_t c; (c = work->next.fetch_add(1)) < chunks;) {
      MatmulRows(xp, m, k, bp, n, block_bytes, yp, c * per, std::min(n, (c + 1) * per));
      work->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t c = 1; c < chunks; ++c) pool.Schedule([run] { run(); });
  run();
  while (work->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EagleGgufMatmul, GgufMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// Whether this CPU runs the kernel's instructions (checked before the handler is registered).
extern "C" int EagleGgufMatmulSupported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
