// Native XLA:CPU kernels (FFI) for the products of a decode step, where XLA's own are slow:
//
// 1. EagleGgufMatmul: y [M, N] = x [M, K] times W [N, K]^T, W held in its GGUF blocks.
//    A decode step multiplies a few activation rows by every weight matrix once, so float32
//    weights make it wait on memory; GGUF's blocks are 5-6x fewer bytes. Each block of 32
//    weights is expanded exactly as gguf-py dequantises it (d * q + m, rounded twice, no FMA),
//    so the weights equal the float32 copy XLA multiplies and only the summation order
//    differs. Up to 8 rows multiply each block as it is expanded in registers; more rows
//    share one expansion into a float32 panel of weight rows (a register-tiled product).
// 2. EagleAttentionScores / EagleAttentionValues: the two batched products of attention over
//    the KV cache, q [P, G, D] . keys [P, T, D]^T and probs [P, G, T] . values [P, T, D], P =
//    batch x KV heads. XLA:CPU runs them as P tiny GEMMs, the largest cost of a decode step
//    at batch 32 before these kernels. Mask and softmax stay in XLA.
//
// Work is split over XLA's intra-op thread pool.
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
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kBlock = 32;
constexpr int64_t kQ41Bytes = 20;
constexpr int64_t kQ80Bytes = 34;

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

// A weight row expanded once into float32 (for products of many activation rows).
template <void (*Expand)(const uint8_t*, __m256*)>
void ExpandRow(const uint8_t* row, int64_t k, int64_t block_bytes, float* out) {
  for (int64_t b = 0; b < k / kBlock; ++b) {
    __m256 w[4];
    Expand(row + b * block_bytes, w);
    for (int i = 0; i < 4; ++i) _mm256_storeu_ps(out + b * kBlock + 8 * i, w[i]);
  }
}

// y[r, j] for MT activation rows x[r, :] and NT expanded weight rows w[j, :] (both stride k):
// MT * NT accumulators reuse each loaded vector NT or MT times. Each sum runs lane by lane
// over k and then across lanes, the order DotRows sums a single chain in.
template <int MT, int NT>
void PanelTile(const float* x, int64_t k, const float* w, float* y, int64_t y_stride) {
  __m256 acc[MT][NT];
  for (int r = 0; r < MT; ++r)
    for (int j = 0; j < NT; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t c = 0; c < k; c += 8) {
    __m256 wv[NT];
    for (int j = 0; j < NT; ++j) wv[j] = _mm256_loadu_ps(w + j * k + c);
    for (int r = 0; r < MT; ++r) {
      const __m256 xv = _mm256_loadu_ps(x + r * k + c);
      for (int j = 0; j < NT; ++j) acc[r][j] = _mm256_fmadd_ps(xv, wv[j], acc[r][j]);
    }
  }
  for (int r = 0; r < MT; ++r)
    for (int j = 0; j < NT; ++j) y[r * y_stride + j] = HorizontalSum(acc[r][j]);
}

// Tile sizes of the expanded path: 12 accumulators, 3 weight vectors and 1 activation vector
// fill AVX2's 16 registers.
constexpr int64_t kPanelWeights = 3;
constexpr int64_t kPanelRows = 4;
// Up to this many rows, expanding each block once in registers for all of them is faster.
constexpr int64_t kDirectRows = 8;

// y [m, NT] (row stride n) = x [m, k] times NT float32 weight rows w [NT, k].
template <int NT>
void PanelRows(const float* x, int64_t m, int64_t k, const float* w, float* y, int64_t n) {
  int64_t r = 0;
  for (; r + kPanelRows <= m; r += kPanelRows) {
    PanelTile<kPanelRows, NT>(x + r * k, k, w, y + r * n, n);
  }
  switch (m - r) {
    case 1: return PanelTile<1, NT>(x + r * k, k, w, y + r * n, n);
    case 2: return PanelTile<2, NT>(x + r * k, k, w, y + r * n, n);
    case 3: return PanelTile<3, NT>(x + r * k, k, w, y + r * n, n);
  }
}

// y [m, n] columns [begin, end) = x [m, k] times float32 rows w [n, k] (row stride k), held
// panel by panel in `panel` (kPanelWeights rows) by `fill(first_row, rows, panel)`.
template <typename Fill>
void PanelProduct(const float* x, int64_t m, int64_t k, float* y, int64_t n, int64_t begin,
                  int64_t end, Fill fill) {
  for (int64_t j = begin; j < end; j += kPanelWeights) {
    const int64_t nt = std::min(kPanelWeights, end - j);
    const float* w = fill(j, nt);
    switch (nt) {
      case 1: PanelRows<1>(x, m, k, w, y + j, n); break;
      case 2: PanelRows<2>(x, m, k, w, y + j, n); break;
      case 3: PanelRows<3>(x, m, k, w, y + j, n); break;
    }
  }
}

// Weight rows [begin, end) against every activation row. A few rows multiply each block as it
// is expanded in registers; more rows amortise one expansion into a float32 panel.
template <void (*Expand)(const uint8_t*, __m256*)>
void MatmulRows(const float* x, int64_t m, int64_t k, const uint8_t* blocks, int64_t n,
                int64_t block_bytes, float* y, int64_t begin, int64_t end) {
  const int64_t row_bytes = k / kBlock * block_bytes;
  if (m <= kDirectRows) {
    for (int64_t j = begin; j < end; ++j) {
      DotTile<Expand>(m, x, k, blocks + j * row_bytes, block_bytes, y + j, n);
    }
    return;
  }
  std::vector<float> panel(kPanelWeights * k);
  PanelProduct(x, m, k, y, n, begin, end, [&](int64_t first, int64_t rows) {
    for (int64_t t = 0; t < rows; ++t) {
      ExpandRow<Expand>(blocks + (first + t) * row_bytes, k, block_bytes, panel.data() + t * k);
    }
    return panel.data();
  });
}

// fn(begin, end) over [0, n), split into at most one range per pool thread of at least `grain`
// items. Ranges are claimed from a shared counter by this thread and by helpers on XLA's pool;
// this thread works until none are left, so it never waits on a helper that has not started
// (XLA may run independent products at once on every pool thread). A helper that starts late
// finds nothing to claim: the shared state outlives this call.
template <typename Fn>
void ParallelRanges(ffi::ThreadPool& pool, int64_t n, int64_t grain, Fn fn) {
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n / grain));
  const int64_t per = (n + chunks - 1) / chunks;
  struct Work {
    std::atomic<int64_t> next{0}, done{0};
  };
  const auto work = std::make_shared<Work>();
  const auto run = [=] {
    for (int64_t c; (c = work->next.fetch_add(1)) < chunks;) {
      fn(c * per, std::min(n, (c + 1) * per));
      work->done.fetch_add(1, std::memory_order_release);
    }
  };
  for (int64_t c = 1; c < chunks; ++c) pool.Schedule([run] { run(); });
  run();
  while (work->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
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
  const auto rows = block_bytes == kQ41Bytes ? MatmulRows<ExpandQ41> : MatmulRows<ExpandQ80>;
  ParallelRanges(pool, n, 64, [=](int64_t begin, int64_t end) {
    rows(xp, m, k, bp, n, block_bytes, yp, begin, end);
  });
  return ffi::Error::Success();
}

// Whether a [P, G, X] and cache [P, T, D] are attention operands that share P and contract
// a[2] with cache[contracted] (D a multiple of 8); else the error naming what was expected.
ffi::Error CheckAttention(const char* name, const char* shapes, ffi::Span<const int64_t> a,
                          ffi::Span<const int64_t> cache, int contracted) {
  if (a.size() != 3 || cache.size() != 3 || a[0] != cache[0] || a[2] != cache[contracted] ||
      cache[2] % 8 != 0) {
    return ffi::Error::InvalidArgument(std::string(name) + ": expected " + shapes +
                                       ", D a multiple of 8");
  }
  return ffi::Error::Success();
}

// scores [P, G, T] = q [P, G, D] times keys [P, T, D]^T: the keys are the panels of the
// weight-row product above, already float32.
ffi::Error AttentionScores(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> keys, ffi::ResultBuffer<ffi::F32> scores) {
  const auto qd = q.dimensions(), kd = keys.dimensions();
  if (auto e = CheckAttention("attention_scores", "q [P, G, D] and keys [P, T, D]", qd, kd, 2);
      e.failure()) {
    return e;
  }
  const int64_t g = qd[1], d = qd[2], t = kd[1];
  const float* qp = q.typed_data();
  const float* kp = keys.typed_data();
  float* sp = scores->typed_data();
  ParallelRanges(pool, qd[0], 1, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* kb = kp + i * t * d;
      PanelProduct(qp + i * g * d, g, d, sp + i * g * t, t, 0, t,
                   [=](int64_t first, int64_t) { return kb + first * d; });
    }
  });
  return ffi::Error::Success();
}

// out [P, G, D] = probs [P, G, T] times values [P, T, D]: each output row sums T value rows,
// 64 lanes at a time in registers.
ffi::Error AttentionValues(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> probs,
                           ffi::Buffer<ffi::F32> values, ffi::ResultBuffer<ffi::F32> out) {
  const auto pd = probs.dimensions(), vd = values.dimensions();
  if (auto e = CheckAttention("attention_values", "probs [P, G, T] and values [P, T, D]", pd,
                              vd, 1);
      e.failure()) {
    return e;
  }
  const int64_t g = pd[1], t = pd[2], d = vd[2];
  const float* pp = probs.typed_data();
  const float* vp = values.typed_data();
  float* op = out->typed_data();
  constexpr int64_t kLanes = 64;
  ParallelRanges(pool, pd[0], 1, [=](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float* vb = vp + i * t * d;
      for (int64_t gi = 0; gi < g; ++gi) {
        const float* weight = pp + (i * g + gi) * t;
        float* o = op + (i * g + gi) * d;
        for (int64_t d0 = 0; d0 < d; d0 += kLanes) {
          const int64_t vectors = std::min(kLanes, d - d0) / 8;
          __m256 acc[kLanes / 8];
          for (int64_t j = 0; j < vectors; ++j) acc[j] = _mm256_setzero_ps();
          for (int64_t ti = 0; ti < t; ++ti) {
            const __m256 w = _mm256_set1_ps(weight[ti]);
            const float* v = vb + ti * d + d0;
            for (int64_t j = 0; j < vectors; ++j) {
              acc[j] = _mm256_fmadd_ps(w, _mm256_loadu_ps(v + 8 * j), acc[j]);
            }
          }
          for (int64_t j = 0; j < vectors; ++j) _mm256_storeu_ps(o + d0 + 8 * j, acc[j]);
        }
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

#define EAGLE_BIND_2(IN0, IN1)                                                            \
  ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<IN0>>().Arg<ffi::Buffer<IN1>>() \
      .Ret<ffi::Buffer<ffi::F32>>()
XLA_FFI_DEFINE_HANDLER_SYMBOL(EagleGgufMatmul, GgufMatmul, EAGLE_BIND_2(ffi::F32, ffi::U8));
XLA_FFI_DEFINE_HANDLER_SYMBOL(EagleAttentionScores, AttentionScores,
                              EAGLE_BIND_2(ffi::F32, ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(EagleAttentionValues, AttentionValues,
                              EAGLE_BIND_2(ffi::F32, ffi::F32));

// Whether this CPU runs the kernels' instructions (checked before the handlers are registered).
extern "C" int EagleNativeKernelsSupported() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("f16c");
}
