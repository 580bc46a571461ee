// The GMNN contractions' VJP for B cotangents at once (a shallow ensemble's members), as the
// cotangents of the distinct monomials' pair sums: the same numbers as
// apax_core.model.gmnn.contractions_pullback, in one pass over the atoms.
//
// Per atom, the products of each contraction's other factors ("partners", folded onto the
// distinct components of the moment they multiply) are formed once; then every feature adds
// its B cotangents times its partners to the moments it depends on. The member axis is the
// innermost loop (contiguous, vectorised). XLA's version of the same arithmetic runs as ~40
// small batched ops whose index shuffling costs far more than their flops.
//
// Inputs: moments (N, S, 40) as [m0, m1 (3), m2 (9), m3 (27)] (full, symmetric tensors),
// cotangents (B, N, F) with F = descriptor_size(S, n_contr). Output: (N, B, S, 20).

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Distinct monomial of an index pair / triple, by 3x + y and 9x + 3y + z (offsets within
// their rank's block of apax_core.model.gmnn._MONOMIALS).
constexpr int kPair[9] = {0, 1, 2, 1, 3, 4, 2, 4, 5};
constexpr int kTriple[27] = {0, 1, 2, 1, 3, 4, 2, 4, 5, 1, 3, 4, 3, 6, 7,
                             4, 7, 8, 2, 4, 5, 4, 7, 8, 5, 8, 9};

struct Moments {
  const float* p;  // (S, 40)
  float m1(int s, int x) const { return p[s * 40 + 1 + x]; }
  float m2(int s, int x, int y) const { return p[s * 40 + 4 + 3 * x + y]; }
  float m3(int s, int x, int y, int z) const { return p[s * 40 + 13 + 9 * x + 3 * y + z]; }
};

// Partner products of one atom, folded: index [a * S + b] then component.
struct Partners {
  int S;
  std::vector<float> f2, f3, aa, p51, o5, p6, q6, p7, q7, r7;
  explicit Partners(int S)
      : S(S), f2(S * 6), f3(S * 10), aa(S * S * 6), p51(S * S * 3), o5(S * S * 6),
        p6(S * S * 10), q6(S * S * 6), p7(S * S * 10), q7(S * S * 6), r7(S * S * 3) {}

  void compute(const Moments& m) {
    for (auto* v : {&f2, &f3, &aa, &o5, &p6, &q6, &p7, &q7}) std::fill(v->begin(), v->end(), 0.f);
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < 9; ++i) {
        f2[s * 6 + kPair[i]] += m.m2(s, i / 3, i % 3);
        for (int z = 0; z < 3; ++z) f3[s * 10 + kTriple[3 * i + z]] += m.m3(s, i / 3, i % 3, z);
      }
    for (int a = 0; a < S; ++a)
      for (int b = 0; b < S; ++b) pair_partners(m, a, b, a * S + b);
  }

  // The partners of index pair (a, b), as gmnn._partners forms them.
  void pair_partners(const Moments& m, int a, int b, int ab) {
    for (int x = 0; x < 3; ++x) {
      float p51_ = 0.f, r7_ = 0.f;
      for (int y = 0; y < 3; ++y) {
        p51_ += m.m2(b, x, y) * m.m1(a, y);  // (A_b m1_a)_x
        const int c2 = ab * 6 + kPair[3 * x + y];
        float aa_ = 0.f, q6_ = 0.f, q7_ = 0.f;
        for (int z = 0; z < 3; ++z) {
          r7_ += m.m3(a, z, y, x) * m.m2(b, z, y);  // sum_zy m3_a,zyx A_b,zy
          aa_ += m.m2(a, x, z) * m.m2(b, z, y);     // (A_a A_b)_xy
          q7_ += m.m3(a, x, y, z) * m.m1(b, z);     // sum_z m3_a,xyz m1_b,z
          const int c3 = ab * 10 + kTriple[9 * x + 3 * y + z];
          p7[c3] += m.m2(a, x, y) * m.m1(b, z);  // A_a,xy m1_b,z
          float p6_ = 0.f;
          for (int w = 0; w < 3; ++w) {
            p6_ += m.m3(a, x, y, w) * m.m2(b, z, w);     // sum_w m3_a,xyw A_b,zw
            q6_ += m.m3(a, z, w, x) * m.m3(b, z, w, y);  // sum_zw m3_a,zwx m3_b,zwy
          }
          p6[c3] += p6_;
        }
        aa[c2] += aa_;
        q6[c2] += q6_;
        q7[c2] += q7_;
        o5[c2] += m.m1(a, x) * m.m1(b, y);
      }
      p51[ab * 3 + x] = p51_;
      r7[ab * 3 + x] = r7_;
    }
  }
};

// acc[0:B] += d[0:B] * w
inline void axpy(float* acc, const float* d, float w, int B) {
  for (int b = 0; b < B; ++b) acc[b] += d[b] * w;
}

struct Accumulator {
  int S, B;
  std::vector<float> g;  // (S, 20, B)
  Accumulator(int S, int B) : S(S), B(B), g(S * 20 * B) {}
  float* at(int s, int c) { return g.data() + (s * 20 + c) * B; }
  // g[q][off + c] += d * partner[c] for c < n
  void add(int q, int off, const float* d, const float* partner, int n) {
    for (int c = 0; c < n; ++c) axpy(at(q, off + c), d, partner[c], B);
  }
};

void one_atom(const Moments& m, const float* d, Partners& p, Accumulator& acc, int n_contr) {
  const int S = p.S, B = acc.B;
  std::fill(acc.g.begin(), acc.g.end(), 0.f);
  p.compute(m);
  float m1[3];
  int f = 0;
  auto row = [&](int feature) { return d + feature * B; };
  for (int r = 0; r < S; ++r, ++f) axpy(acc.at(r, 0), row(f), 1.f, B);
  for (int group = 1; group < std::min(n_contr, 4); ++group)
    for (int r = 0; r < S; ++r)
      for (int s = r; s < S; ++s, ++f) {
        for (int side = 0; side < 2; ++side) {
          const int q = side ? s : r, o = side ? r : s;
          if (group == 1) {
            for (int x = 0; x < 3; ++x) m1[x] = m.m1(o, x);
            acc.add(q, 1, row(f), m1, 3);
          } else if (group == 2) {
            acc.add(q, 4, row(f), &p.f2[o * 6], 6);
          } else {
            acc.add(q, 10, row(f), &p.f3[o * 10], 10);
          }
        }
      }
  if (n_contr > 4)
    for (int r = 0; r < S; ++r)
      for (int s = r; s < S; ++s)
        for (int t = s; t < S; ++t, ++f) {
          acc.add(r, 4, row(f), &p.aa[(s * S + t) * 6], 6);
          acc.add(s, 4, row(f), &p.aa[(r * S + t) * 6], 6);
          acc.add(t, 4, row(f), &p.aa[(r * S + s) * 6], 6);
        }
  for (int group = 5; group < std::min(n_contr, 7); ++group)
    for (int r = 0; r < S; ++r)
      for (int s = r; s < S; ++s)
        for (int t = 0; t < S; ++t, ++f) {
          if (group == 5) {
            acc.add(r, 1, row(f), &p.p51[(s * S + t) * 3], 3);
            acc.add(s, 1, row(f), &p.p51[(r * S + t) * 3], 3);
            acc.add(t, 4, row(f), &p.o5[(r * S + s) * 6], 6);
          } else {
            acc.add(r, 10, row(f), &p.p6[(s * S + t) * 10], 10);
            acc.add(s, 10, row(f), &p.p6[(r * S + t) * 10], 10);
            acc.add(t, 4, row(f), &p.q6[(r * S + s) * 6], 6);
          }
        }
  if (n_contr > 7)
    for (int r = 0; r < S; ++r)
      for (int s = 0; s < S; ++s)
        for (int t = 0; t < S; ++t, ++f) {
          acc.add(r, 10, row(f), &p.p7[(s * S + t) * 10], 10);
          acc.add(s, 4, row(f), &p.q7[(r * S + t) * 6], 6);
          acc.add(t, 1, row(f), &p.r7[(r * S + s) * 3], 3);
        }
}

void atom_range(const float* moments, const float* d, float* out, int64_t lo, int64_t hi,
                int64_t N, int S, int B, int F, int n_contr) {
  Partners p(S);
  Accumulator acc(S, B);
  std::vector<float> dt(static_cast<size_t>(F) * B);  // this atom's cotangents, (F, B)
  for (int64_t n = lo; n < hi; ++n) {
    for (int b = 0; b < B; ++b)
      for (int f = 0; f < F; ++f) dt[f * B + b] = d[(b * N + n) * F + f];
    one_atom(Moments{moments + n * S * 40}, dt.data(), p, acc, n_contr);
    float* o = out + n * B * S * 20;  // (B, S, 20)
    for (int s = 0; s < S; ++s)
      for (int c = 0; c < 20; ++c)
        for (int b = 0; b < B; ++b) o[(b * S + s) * 20 + c] = acc.g[(s * 20 + c) * B + b];
  }
}

ffi::Error Impl(ffi::Buffer<ffi::F32> moments, ffi::Buffer<ffi::F32> d,
                ffi::ResultBuffer<ffi::F32> out, int64_t n_contr, int64_t n_threads) {
  const auto md = moments.dimensions();
  const auto dd = d.dimensions();
  if (md.size() != 3 || md[2] != 40 || dd.size() != 3 || dd[1] != md[0])
    return ffi::Error::InvalidArgument("contractions_pullback: moments (N, S, 40), d (B, N, F)");
  const int64_t N = md[0];
  const int S = static_cast<int>(md[1]), B = static_cast<int>(dd[0]);
  const int F = static_cast<int>(dd[2]);
  const float* mp = moments.typed_data();
  const float* dp = d.typed_data();
  float* op = out->typed_data();
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(n_threads, N / 32));
  std::vector<std::thread> pool;
  const int64_t chunk = (N + threads - 1) / threads;
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t lo = t * chunk, hi = std::min(N, lo + chunk);
    if (lo < hi)
      pool.emplace_back(atom_range, mp, dp, op, lo, hi, N, S, B, F, static_cast<int>(n_contr));
  }
  atom_range(mp, dp, op, 0, std::min(N, chunk), N, S, B, F, static_cast<int>(n_contr));
  for (auto& th : pool) th.join();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxContractionsPullback, Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("n_contr")
                                  .Attr<int64_t>("n_threads"));
