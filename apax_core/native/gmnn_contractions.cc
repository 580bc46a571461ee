// The GMNN contractions (apax_core.model.gmnn.contractions) and their VJP, as the cotangents
// of the distinct monomials' pair sums (the same numbers as gmnn.contractions_pullback), each
// in one pass over the atoms. XLA's version of the same arithmetic runs as ~40 small batched
// ops whose index shuffling costs far more than their flops.
//
// Per atom, the products of each contraction's other factors ("partners", folded onto the
// distinct components of the moment they multiply) are formed once. A feature is its first
// factor's distinct components dotted with its partners; its VJP adds the feature's cotangent
// times its partners to each factor. Three ways to fill the vector lanes:
// - ApaxContractionsPullback: B cotangents of one atom (a shallow ensemble's members) in the
//   lanes, scalar partners;
// - ApaxContractions / ApaxContractionsVjp: one cotangent, kLanes atoms in the lanes;
// - ApaxContractionsVjpVjp: the VJP's own VJP (training on forces), the same code in Dual
//   numbers (kLanes atoms and their tangents).
//
// The member kernel takes the moments as (N, S, 40): [m0, m1 (3), m2 (9), m3 (27)] (full,
// symmetric tensors); the single-cotangent ones take the 20 distinct sums (..., S, 20).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// Distinct monomial of an index pair / triple, by 3x + y and 9x + 3y + z (offsets within
// their rank's block of apax_core.model.gmnn._MONOMIALS).
constexpr int kPair[9] = {0, 1, 2, 1, 3, 4, 2, 4, 5};
constexpr int kTriple[27] = {0, 1, 2, 1, 3, 4, 2, 4, 5, 1, 3, 4, 3, 6, 7,
                             4, 7, 8, 2, 4, 5, 4, 7, 8, 5, 8, 9};

// kLanes floats, one per atom of a block; GCC vectorises the loops over them.
constexpr int kLanes = 8;
struct V {
  float v[kLanes];
};
typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));
inline V operator*(const V& a, const V& b) {
  V r;
  for (int l = 0; l < kLanes; ++l) r.v[l] = a.v[l] * b.v[l];
  return r;
}
inline V& operator+=(V& a, const V& b) {
  for (int l = 0; l < kLanes; ++l) a.v[l] += b.v[l];
  return a;
}
inline V operator+(V a, const V& b) { return a += b; }
inline float lane(float x, int) { return x; }
inline float lane(const V& x, int l) { return x.v[l]; }

// A block of atoms and its tangent along a direction of the sums (forward mode), for the
// second-order kernel: the same partner and feature code then also yields their derivatives.
struct Dual {
  V v, t;
};
inline Dual operator*(const Dual& a, const Dual& b) { return {a.v * b.v, a.v * b.t + a.t * b.v}; }
inline Dual& operator+=(Dual& a, const Dual& b) {
  a.v += b.v;
  a.t += b.t;
  return a;
}
// What a VJP accumulates from a Dual partner: its tangent, so that the accumulated cotangent
// is the VJP's derivative along the tangent (a Hessian-vector product).
inline float lane(const Dual& x, int l) { return x.t.v[l]; }

// Representative full component of each distinct rank-2 and rank-3 monomial.
constexpr int kRep2[6] = {0, 1, 2, 4, 5, 8};
constexpr int kRep3[10] = {0, 1, 2, 4, 5, 8, 13, 14, 17, 26};

template <class T>
struct Moments {
  const T* p;  // (S, 40)
  const T& m0(int s) const { return p[s * 40]; }
  const T& m1(int s, int x) const { return p[s * 40 + 1 + x]; }
  const T& m2(int s, int x, int y) const { return p[s * 40 + 4 + 3 * x + y]; }
  const T& m3(int s, int x, int y, int z) const { return p[s * 40 + 13 + 9 * x + 3 * y + z]; }
  const T& d2(int s, int c) const { return p[s * 40 + 4 + kRep2[c]]; }   // distinct rank 2
  const T& d3(int s, int c) const { return p[s * 40 + 13 + kRep3[c]]; }  // distinct rank 3
};

// Partner products of one atom (or block), folded: index [a * S + b] then component.
template <class T>
struct Partners {
  int S;
  std::vector<T> f2, f3, aa, p51, o5, p6, q6, p7, q7, r7;
  explicit Partners(int S)
      : S(S), f2(S * 6), f3(S * 10), aa(S * S * 6), p51(S * S * 3), o5(S * S * 6),
        p6(S * S * 10), q6(S * S * 6), p7(S * S * 10), q7(S * S * 6), r7(S * S * 3) {}

  void compute(const Moments<T>& m) {
    for (auto* v : {&f2, &f3, &aa, &o5, &p6, &q6, &p7, &q7}) std::fill(v->begin(), v->end(), T{});
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < 9; ++i) {
        f2[s * 6 + kPair[i]] += m.m2(s, i / 3, i % 3);
        for (int z = 0; z < 3; ++z) f3[s * 10 + kTriple[3 * i + z]] += m.m3(s, i / 3, i % 3, z);
      }
    for (int a = 0; a < S; ++a)
      for (int b = 0; b < S; ++b) pair_partners(m, a, b, a * S + b);
  }

  // The partners of index pair (a, b), as gmnn._partners forms them.
  void pair_partners(const Moments<T>& m, int a, int b, int ab) {
    for (int x = 0; x < 3; ++x) {
      T p51_{}, r7_{};
      for (int y = 0; y < 3; ++y) {
        p51_ += m.m2(b, x, y) * m.m1(a, y);  // (A_b m1_a)_x
        const int c2 = ab * 6 + kPair[3 * x + y];
        T aa_{}, q6_{}, q7_{};
        for (int z = 0; z < 3; ++z) {
          r7_ += m.m3(a, z, y, x) * m.m2(b, z, y);  // sum_zy m3_a,zyx A_b,zy
          aa_ += m.m2(a, x, z) * m.m2(b, z, y);     // (A_a A_b)_xy
          q7_ += m.m3(a, x, y, z) * m.m1(b, z);     // sum_z m3_a,xyz m1_b,z
          const int c3 = ab * 10 + kTriple[9 * x + 3 * y + z];
          p7[c3] += m.m2(a, x, y) * m.m1(b, z);  // A_a,xy m1_b,z
          T p6_{};
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
  // g[q][off + c][b] += d[b] * partner[c] (lane b of it), c < n; B is a multiple of kLanes
  // (the member kernel pads its cotangents), and kLanes floats make one vector register.
  template <class T>
  void add(int q, int off, const float* d, const T* partner, int n) {
    for (int b = 0; b < B; b += kLanes) {
      Vec dv;
      __builtin_memcpy(&dv, d + b, sizeof dv);
      float* a = at(q, off) + b;
      for (int c = 0; c < n; ++c, a += B) {
        Vec av, pv;
        __builtin_memcpy(&av, a, sizeof av);
        if constexpr (std::is_same_v<T, float>)
          pv = Vec{} + partner[c];
        else
          for (int l = 0; l < kLanes; ++l) pv[l] = lane(partner[c], b + l);
        av += dv * pv;
        __builtin_memcpy(a, &av, sizeof av);
      }
    }
  }
};

// The VJP of one atom (T = float: B members in the lanes) or of a block of atoms (T = V: one
// cotangent per atom, B = kLanes): d (F, B) -> acc.g (S, 20, B). With T = Dual, acc.g is
// instead the VJP's derivative along the moments' tangent (the linear group adds nothing).
template <class T>
void vjp(const Moments<T>& m, const float* d, Partners<T>& p, Accumulator& acc, int n_contr) {
  const int S = p.S, B = acc.B;
  std::fill(acc.g.begin(), acc.g.end(), 0.f);
  p.compute(m);
  T m1[3];
  int f = 0;
  auto row = [&](int feature) { return d + feature * B; };
  for (int r = 0; r < S; ++r, ++f)
    if (!std::is_same_v<T, Dual>) axpy(acc.at(r, 0), row(f), 1.f, B);
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

// sum_c a[c] * b[c], c < n
template <class T>
T dot(const T* a, const T* b, int n) {
  T acc{};
  for (int c = 0; c < n; ++c) acc += a[c] * b[c];
  return acc;
}

// The features of one block (a feature: its first factor's distinct components dotted with
// the folded product of the others), in gmnn.contractions' order.
template <class T>
void features(const Moments<T>& m, const Partners<T>& p, int n_contr, T* out) {
  const int S = p.S;
  int f = 0;
  T d2[6], d3[10];
  auto load = [&](int s) {
    for (int c = 0; c < 6; ++c) d2[c] = m.d2(s, c);
    for (int c = 0; c < 10; ++c) d3[c] = m.d3(s, c);
  };
  for (int r = 0; r < S; ++r) out[f++] = m.m0(r);
  for (int group = 1; group < std::min(n_contr, 4); ++group)
    for (int r = 0; r < S; ++r) {
      load(r);
      for (int s = r; s < S; ++s) {
        if (group == 1) out[f++] = dot(&m.m1(r, 0), &m.m1(s, 0), 3);
        if (group == 2) out[f++] = dot(d2, &p.f2[s * 6], 6);
        if (group == 3) out[f++] = dot(d3, &p.f3[s * 10], 10);
      }
    }
  if (n_contr > 4)
    for (int r = 0; r < S; ++r) {
      load(r);
      for (int s = r; s < S; ++s)
        for (int t = s; t < S; ++t) out[f++] = dot(d2, &p.aa[(s * S + t) * 6], 6);
    }
  for (int group = 5; group < std::min(n_contr, 7); ++group)
    for (int r = 0; r < S; ++r)
      for (int s = r; s < S; ++s)
        for (int t = 0; t < S; ++t) {
          load(t);
          const auto& q = group == 5 ? p.o5 : p.q6;
          out[f++] = dot(d2, &q[(r * S + s) * 6], 6);
        }
  if (n_contr > 7)
    for (int r = 0; r < S; ++r) {
      load(r);
      for (int s = 0; s < S; ++s)
        for (int t = 0; t < S; ++t) out[f++] = dot(d3, &p.p7[(s * S + t) * 10], 10);
    }
}

void atom_range(const float* moments, const float* d, float* out, int64_t lo, int64_t hi,
                int64_t N, int S, int B, int F, int n_contr) {
  const int Bp = (B + kLanes - 1) / kLanes * kLanes;  // members padded to whole lanes
  Partners<float> p(S);
  Accumulator acc(S, Bp);
  std::vector<float> dt(static_cast<size_t>(F) * Bp);  // this atom's cotangents, (F, Bp)
  for (int64_t n = lo; n < hi; ++n) {
    for (int b = 0; b < B; ++b)
      for (int f = 0; f < F; ++f) dt[f * Bp + b] = d[(b * N + n) * F + f];
    if (n + 1 < hi)  // the next atom's cotangents, B rows of F, on their way from memory
      for (int b = 0; b < B; ++b)
        for (int f = 0; f < F; f += 16) __builtin_prefetch(d + (b * N + n + 1) * F + f);
    vjp(Moments<float>{moments + n * S * 40}, dt.data(), p, acc, n_contr);
    float* o = out + n * B * S * 20;  // (B, S, 20)
    for (int s = 0; s < S; ++s)
      for (int c = 0; c < 20; ++c)
        for (int b = 0; b < B; ++b) o[(b * S + s) * 20 + c] = acc.g[(s * 20 + c) * Bp + b];
  }
}

// fn(lo, hi) over [0, n) split among up to n_threads threads (this one included).
template <class Fn>
void parallel(int64_t n, int64_t n_threads, int64_t min_per_thread, Fn fn) {
  const int64_t threads = std::max<int64_t>(1, std::min(n_threads, n / min_per_thread));
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < threads; ++t)
    if (t * chunk < n) pool.emplace_back(fn, t * chunk, std::min(n, (t + 1) * chunk));
  fn(int64_t{0}, std::min(n, chunk));
  for (auto& th : pool) th.join();
}

ffi::Error MemberVjp(ffi::Buffer<ffi::F32> moments, ffi::Buffer<ffi::F32> d,
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
  parallel(N, n_threads, 32, [=](int64_t lo, int64_t hi) {
    atom_range(mp, dp, op, lo, hi, N, S, B, F, static_cast<int>(n_contr));
  });
  return ffi::Error::Success();
}

// Position of each full component [1, m1 (3), m2 (9), m3 (27)] among the 20 distinct ones.
constexpr int kFull[40] = {0,  1,  2,  3,  4,  5,  6,  5,  7,  8,  6,  8,  9,  10,
                           11, 12, 11, 13, 14, 12, 14, 15, 11, 13, 14, 13, 16, 17,
                           14, 17, 18, 12, 14, 15, 14, 17, 18, 15, 18, 19};

// Atoms [lo, hi) of the distinct sums (A, S, 20), as full tensors in the lanes of `m`.
void load_block(const float* sums, int64_t lo, int64_t hi, int S, std::vector<V>& m) {
  std::fill(m.begin(), m.end(), V{});
  for (int64_t n = lo; n < hi; ++n)
    for (int s = 0; s < S; ++s)
      for (int i = 0; i < 40; ++i) m[s * 40 + i].v[n - lo] = sums[(n * S + s) * 20 + kFull[i]];
}

// The per-atom block loop of the single-cotangent kernels.
template <class Fn>
void blocks(int64_t A, int64_t n_threads, Fn per_block) {
  const int64_t n_blocks = (A + kLanes - 1) / kLanes;
  parallel(n_blocks, n_threads, 4, [=](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk)
      per_block(blk * kLanes, std::min(A, (blk + 1) * kLanes));
  });
}

int64_t leading(ffi::Span<const int64_t> dims, size_t trailing) {
  int64_t n = 1;
  for (size_t i = 0; i + trailing < dims.size(); ++i) n *= dims[i];
  return n;
}

ffi::Error Forward(ffi::Buffer<ffi::F32> moments, ffi::ResultBuffer<ffi::F32> out,
                   int64_t n_contr, int64_t n_threads) {
  const auto md = moments.dimensions();
  const auto od = out->dimensions();
  if (md.size() < 2 || md.back() != 20)
    return ffi::Error::InvalidArgument("contractions: moment sums (..., S, 20)");
  const int64_t A = leading(md, 2);
  const int S = static_cast<int>(md[md.size() - 2]), F = static_cast<int>(od.back());
  const float* mp = moments.typed_data();
  float* op = out->typed_data();
  blocks(A, n_threads, [=](int64_t lo, int64_t hi) {
    thread_local std::vector<V> m, f;
    thread_local std::vector<Partners<V>> p;
    m.resize(S * 40);
    f.resize(F);
    if (p.empty() || p[0].S != S) p.assign(1, Partners<V>(S));
    load_block(mp, lo, hi, S, m);
    Moments<V> mm{m.data()};
    p[0].compute(mm);
    features(mm, p[0], static_cast<int>(n_contr), f.data());
    for (int64_t n = lo; n < hi; ++n)
      for (int i = 0; i < F; ++i) op[n * F + i] = f[i].v[n - lo];
  });
  return ffi::Error::Success();
}

// The cotangents (A, F) of a block's atoms in the lanes: dt (F, kLanes).
void load_cotangents(const float* d, int64_t lo, int64_t hi, int F, std::vector<float>& dt) {
  dt.assign(static_cast<size_t>(F) * kLanes, 0.f);
  for (int64_t n = lo; n < hi; ++n)
    for (int i = 0; i < F; ++i) dt[i * kLanes + (n - lo)] = d[n * F + i];
}

ffi::Error Vjp(ffi::Buffer<ffi::F32> moments, ffi::Buffer<ffi::F32> d,
               ffi::ResultBuffer<ffi::F32> out, int64_t n_contr, int64_t n_threads) {
  const auto md = moments.dimensions();
  const auto dd = d.dimensions();
  if (md.size() < 2 || md.back() != 20 || leading(dd, 1) != leading(md, 2))
    return ffi::Error::InvalidArgument("contractions_vjp: moment sums (..., S, 20), d (..., F)");
  const int64_t A = leading(md, 2);
  const int S = static_cast<int>(md[md.size() - 2]), F = static_cast<int>(dd.back());
  const float* mp = moments.typed_data();
  const float* dp = d.typed_data();
  float* op = out->typed_data();
  blocks(A, n_threads, [=](int64_t lo, int64_t hi) {
    thread_local std::vector<V> m;
    thread_local std::vector<float> dt;
    thread_local std::vector<Partners<V>> p;
    thread_local std::vector<Accumulator> acc;
    m.resize(S * 40);
    if (p.empty() || p[0].S != S) p.assign(1, Partners<V>(S));
    if (acc.empty() || acc[0].S != S) acc.assign(1, Accumulator(S, kLanes));
    load_block(mp, lo, hi, S, m);
    load_cotangents(dp, lo, hi, F, dt);
    vjp(Moments<V>{m.data()}, dt.data(), p[0], acc[0], static_cast<int>(n_contr));
    for (int64_t n = lo; n < hi; ++n)
      for (int i = 0; i < S * 20; ++i) op[n * S * 20 + i] = acc[0].g[i * kLanes + (n - lo)];
  });
  return ffi::Error::Success();
}

// The VJP of Vjp at (sums, d) for a cotangent g of its result (the sums' shape): the sums'
// part, the Hessian of <d, features> times g, and d's part, the features' JVP along g. One
// pass of the VJP and feature code in Dual numbers (value, derivative along g).
ffi::Error SecondOrder(ffi::Buffer<ffi::F32> moments, ffi::Buffer<ffi::F32> d,
                       ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> d_sums,
                       ffi::ResultBuffer<ffi::F32> d_d, int64_t n_contr, int64_t n_threads) {
  const auto md = moments.dimensions();
  const auto dd = d.dimensions();
  if (md.size() < 2 || md.back() != 20 || leading(dd, 1) != leading(md, 2) ||
      g.dimensions().size() != md.size() || leading(g.dimensions(), 0) != leading(md, 0))
    return ffi::Error::InvalidArgument(
        "contractions_vjp_vjp: moment sums and g (..., S, 20), d (..., F)");
  const int64_t A = leading(md, 2);
  const int S = static_cast<int>(md[md.size() - 2]), F = static_cast<int>(dd.back());
  const float* mp = moments.typed_data();
  const float* dp = d.typed_data();
  const float* gp = g.typed_data();
  float* sp = d_sums->typed_data();
  float* fp = d_d->typed_data();
  blocks(A, n_threads, [=](int64_t lo, int64_t hi) {
    thread_local std::vector<V> value, tangent;
    thread_local std::vector<Dual> m, f;
    thread_local std::vector<float> dt;
    thread_local std::vector<Partners<Dual>> p;
    thread_local std::vector<Accumulator> acc;
    value.resize(S * 40);
    tangent.resize(S * 40);
    m.resize(S * 40);
    f.resize(F);
    if (p.empty() || p[0].S != S) p.assign(1, Partners<Dual>(S));
    if (acc.empty() || acc[0].S != S) acc.assign(1, Accumulator(S, kLanes));
    load_block(mp, lo, hi, S, value);
    load_block(gp, lo, hi, S, tangent);
    for (int i = 0; i < S * 40; ++i) m[i] = Dual{value[i], tangent[i]};
    load_cotangents(dp, lo, hi, F, dt);
    Moments<Dual> mm{m.data()};
    vjp(mm, dt.data(), p[0], acc[0], static_cast<int>(n_contr));  // forms the partners
    features(mm, p[0], static_cast<int>(n_contr), f.data());
    for (int64_t n = lo; n < hi; ++n) {
      for (int i = 0; i < S * 20; ++i) sp[n * S * 20 + i] = acc[0].g[i * kLanes + (n - lo)];
      for (int i = 0; i < F; ++i) fp[n * F + i] = f[i].t.v[n - lo];
    }
  });
  return ffi::Error::Success();
}

// ------------------------------------------------------------------------------------------
// The GMNN's weighted Bessel basis and its slope (apax_core.model.gmnn.weighted_basis_and_slope)
// per pair, kLanes pairs in the lanes, in double: sin and cos of theta = pi r / r_max by
// polynomials of theta - pi / 2 (theta in [0, pi] where the cutoff is nonzero), those of
// k theta by the angle-addition recurrence. XLA recomputes its version's polynomials inside
// every consumer of the basis (twice per function, once more per transposed output).

// sin(z) and cos(z) for |z| <= pi / 2 by Taylor polynomials of degree 19 and 18 in nested
// form, sin z = z (1 - z^2 / (2 3) (1 - z^2 / (4 5) (...))) (|error| < 1e-13).
inline void sin_cos_small(double z, double& s, double& c) {
  const double z2 = z * z;
  double hs = 1.0, hc = 1.0;
  for (int j = 9; j >= 1; --j) {
    hs = 1.0 - z2 * hs * (1.0 / ((2.0 * j) * (2.0 * j + 1.0)));
    hc = 1.0 - z2 * hc * (1.0 / ((2.0 * j - 1.0) * (2.0 * j)));
  }
  s = z * hs;
  c = hc;
}

// The prefactors of apax_core.model.basis.bessel_basis, (-1)^n sqrt(2) pi / r_max^1.5
// (n + 1)(n + 2) / sqrt((n + 1)^2 + (n + 2)^2).
std::vector<double> bessel_prefactors(int Q, double r_max) {
  std::vector<double> out(Q);
  for (int n = 0; n < Q; ++n)
    out[n] = (n % 2 ? -1.0 : 1.0) * std::sqrt(2.0) * M_PI / std::pow(r_max, 1.5) * (n + 1) *
             (n + 2) / std::sqrt((n + 1.0) * (n + 1.0) + (n + 2.0) * (n + 2.0));
  return out;
}

void bessel_block(const float* r, const float* mask, int n, int Q, double r_max,
                  const double* prefactor, float* basis, float* slope) {
  double s[kLanes], c[kLanes], s1[kLanes], c1[kLanes], inv_theta[kLanes], inv_r[kLanes];
  double sinc[kLanes], dsinc[kLanes], w[kLanes], dw[kLanes];
  for (int l = 0; l < kLanes; ++l) {
    const double rl = l < n ? r[l] : r_max, m = l < n ? mask[l] : 0.0;
    const double inside = (rl < r_max && rl > 0.0) ? m : 0.0;
    const double theta = M_PI * std::min(std::max(rl, 1e-6), r_max) / r_max;
    double sz, cz;
    sin_cos_small(theta - 0.5 * M_PI, sz, cz);
    s1[l] = cz;   // sin(theta) = cos(theta - pi/2)
    c1[l] = -sz;  // cos(theta) = -sin(theta - pi/2)
    s[l] = s1[l];
    c[l] = c1[l];
    inv_theta[l] = 1.0 / theta;
    inv_r[l] = 1.0 / std::max(rl, 1e-6);
    sinc[l] = s[l] * inv_theta[l];
    dsinc[l] = (c[l] - sinc[l]) * inv_r[l];
    w[l] = inside * 0.5 * (c1[l] + 1.0);
    dw[l] = inside * (-0.5 * M_PI / r_max) * s1[l];
  }
  for (int q = 0; q < Q; ++q) {
    const double inv_k = 1.0 / (q + 2);
    for (int l = 0; l < kLanes; ++l) {
      const double s_next = s[l] * c1[l] + c[l] * s1[l];
      c[l] = c[l] * c1[l] - s[l] * s1[l];
      s[l] = s_next;
      const double sinc_k = s[l] * inv_theta[l] * inv_k;
      const double dsinc_k = (c[l] - sinc_k) * inv_r[l];
      const double g = prefactor[q] * (sinc[l] + sinc_k);
      const double dg = prefactor[q] * (dsinc[l] + dsinc_k);
      if (l < n) {
        basis[l * Q + q] = static_cast<float>(g * w[l]);
        slope[l * Q + q] = static_cast<float>(dg * w[l] + g * dw[l]);
      }
      sinc[l] = sinc_k;
      dsinc[l] = dsinc_k;
    }
  }
}

ffi::Error BesselBasis(ffi::Buffer<ffi::F32> r, ffi::Buffer<ffi::F32> mask,
                       ffi::ResultBuffer<ffi::F32> basis, ffi::ResultBuffer<ffi::F32> slope,
                       int64_t n_basis, double r_max, int64_t n_threads) {
  const int64_t P = static_cast<int64_t>(r.element_count());
  const int Q = static_cast<int>(n_basis);
  if (static_cast<int64_t>(mask.element_count()) != P ||
      static_cast<int64_t>(basis->element_count()) != P * Q)
    return ffi::Error::InvalidArgument("bessel_basis: r and mask (...), outputs (..., n_basis)");
  const float* rp = r.typed_data();
  const float* mp = mask.typed_data();
  const std::vector<double> prefactors = bessel_prefactors(Q, r_max);
  const double* pp = prefactors.data();
  float* bp = basis->typed_data();
  float* sp = slope->typed_data();
  const int64_t n_blocks = (P + kLanes - 1) / kLanes;
  parallel(n_blocks, n_threads, 64, [=](int64_t lo, int64_t hi) {
    for (int64_t blk = lo; blk < hi; ++blk) {
      const int64_t p = blk * kLanes;
      const int n = static_cast<int>(std::min<int64_t>(kLanes, P - p));
      bessel_block(rp + p, mp + p, n, Q, r_max, pp, bp + p * Q, sp + p * Q);
    }
  });
  return ffi::Error::Success();
}

// ---------------------------------------------------------------------- moments' pull-back
// gmnn.monomials_pullback: the pair sums' cotangents g (A, B, S, 20) -> d_radial
// (A, K, B, S) = sum_c p_c g[., ., s, c] and d_unit (A, K, B, 3) = sum_{s, c} R_s g[., ., s, c]
// d p_c / d u, per pair, p the 20 monomials of its unit vector u (gmnn._MONOMIALS' order:
// 1, x, y, z, the squares by kSquare, the cubes by kCube). kLanes pairs of one atom fill the
// lanes; its cotangents are broadcast. XLA ran the same two per-atom GEMMs as a fusion that
// recomputed the monomials per output.

constexpr int kSquare[2][6] = {{0, 0, 0, 1, 1, 2}, {0, 1, 2, 1, 2, 2}};  // gmnn._SQUARES
constexpr int kCube[2][10] = {{4, 4, 4, 5, 5, 6, 7, 7, 8, 9},         // gmnn._CUBES
                              {0, 1, 2, 1, 2, 2, 1, 2, 2, 2}};

inline void monomials(const Vec* u, Vec* p) {
  p[0] = Vec{} + 1.f;
  for (int x = 0; x < 3; ++x) p[1 + x] = u[x];
  for (int i = 0; i < 6; ++i) p[4 + i] = u[kSquare[0][i]] * u[kSquare[1][i]];
  for (int i = 0; i < 10; ++i) p[10 + i] = p[kCube[0][i]] * u[kCube[1][i]];
}

// d p_c / d u_x = count * p_j, j of degree one less: the nonzero (c, x, j, count).
struct Slope {
  int c, x, j;
  float count;
};
std::vector<Slope> slopes() {
  std::vector<std::vector<int>> t(20);  // each monomial's sorted index tuple
  for (int x = 0; x < 3; ++x) t[1 + x] = {x};
  for (int i = 0; i < 6; ++i) t[4 + i] = {kSquare[0][i], kSquare[1][i]};
  for (int i = 0; i < 10; ++i) {
    t[10 + i] = t[kCube[0][i]];
    t[10 + i].push_back(kCube[1][i]);
    std::sort(t[10 + i].begin(), t[10 + i].end());
  }
  std::vector<Slope> out;
  for (int c = 1; c < 20; ++c)
    for (int x = 0; x < 3; ++x) {
      const auto n = std::count(t[c].begin(), t[c].end(), x);
      if (n == 0) continue;
      auto rest = t[c];
      rest.erase(std::find(rest.begin(), rest.end(), x));
      const int j = static_cast<int>(std::find(t.begin(), t.end(), rest) - t.begin());
      out.push_back({c, x, j, static_cast<float>(n)});
    }
  return out;
}

// kLanes floats of row-major (rows, width) data, column `col`, rows [k0, k0 + n), else 0.
inline Vec column(const float* data, int width, int col, int k0, int n) {
  Vec v = {};
  for (int l = 0; l < n; ++l) v[l] = data[(k0 + l) * width + col];
  return v;
}

void monomials_atom(const float* radial, const float* unit, const float* g, int K, int B, int S,
                    const std::vector<Slope>& table, float* a, float* d_radial, float* d_unit) {
  std::fill(a, a + B * S * 30, 0.f);  // a[b, s, j, x] = sum_c g[b, s, c] d p_c / d u_x |_j
  for (int bs = 0; bs < B * S; ++bs)
    for (const auto& e : table) a[(bs * 10 + e.j) * 3 + e.x] += e.count * g[bs * 20 + e.c];
  for (int k0 = 0; k0 < K; k0 += kLanes) {
    const int n = std::min(kLanes, K - k0);
    Vec u[3], p[20], R[16];
    for (int x = 0; x < 3; ++x) u[x] = column(unit, 3, x, k0, n);
    for (int s = 0; s < S; ++s) R[s] = column(radial, S, s, k0, n);
    monomials(u, p);
    for (int b = 0; b < B; ++b) {
      Vec du[3] = {};
      for (int s = 0; s < S; ++s) {
        const float* gs = g + (b * S + s) * 20;
        const float* as = a + (b * S + s) * 30;
        Vec dr = {}, t[3] = {};
        for (int c = 0; c < 20; ++c) dr += p[c] * gs[c];
        for (int j = 0; j < 10; ++j)
          for (int x = 0; x < 3; ++x) t[x] += p[j] * as[j * 3 + x];
        for (int x = 0; x < 3; ++x) du[x] += R[s] * t[x];
        for (int l = 0; l < n; ++l) d_radial[((k0 + l) * B + b) * S + s] = dr[l];
      }
      for (int l = 0; l < n; ++l)
        for (int x = 0; x < 3; ++x) d_unit[((k0 + l) * B + b) * 3 + x] = du[x][l];
    }
  }
}

ffi::Error MonomialsPullback(ffi::Buffer<ffi::F32> radial, ffi::Buffer<ffi::F32> unit,
                             ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> d_radial,
                             ffi::ResultBuffer<ffi::F32> d_unit, int64_t n_threads) {
  const auto rd = radial.dimensions();
  const auto gd = g.dimensions();
  if (rd.size() < 3 || gd.size() < 4 || gd.back() != 20 || gd[gd.size() - 2] != rd.back() ||
      rd.back() > 16 || leading(gd, 3) != leading(rd, 2) || unit.dimensions().back() != 3 ||
      leading(unit.dimensions(), 1) != leading(rd, 1))
    return ffi::Error::InvalidArgument(
        "monomials_pullback: radial (..., N, K, S <= 16), unit (..., N, K, 3), "
        "g (..., N, B, S, 20)");
  const int64_t A = leading(rd, 2);
  const int K = static_cast<int>(rd[rd.size() - 2]), S = static_cast<int>(rd.back());
  const int B = static_cast<int>(gd[gd.size() - 3]);
  const float* rp = radial.typed_data();
  const float* up = unit.typed_data();
  const float* gp = g.typed_data();
  float* drp = d_radial->typed_data();
  float* dup = d_unit->typed_data();
  static const std::vector<Slope> table = slopes();
  parallel(A, n_threads, 16, [=](int64_t lo, int64_t hi) {
    std::vector<float> a(static_cast<size_t>(B) * S * 30);
    for (int64_t n = lo; n < hi; ++n)
      monomials_atom(rp + n * K * S, up + n * K * 3, gp + n * B * S * 20, K, B, S, table,
                     a.data(), drp + n * K * B * S, dup + n * K * B * 3);
  });
  return ffi::Error::Success();
}

}  // namespace

// (moments, cotangents) -> result, with the group count and the threads as attributes.
#define APAX_TWO_INPUTS                 \
  ffi::Ffi::Bind()                      \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Ret<ffi::Buffer<ffi::F32>>()     \
      .Attr<int64_t>("n_contr")         \
      .Attr<int64_t>("n_threads")

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxContractionsPullback, MemberVjp, APAX_TWO_INPUTS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxContractions, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("n_contr")
                                  .Attr<int64_t>("n_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxContractionsVjp, Vjp, APAX_TWO_INPUTS);

// Three inputs, two results (the attributes follow).
#define APAX_THREE_TO_TWO               \
  ffi::Ffi::Bind()                      \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Arg<ffi::Buffer<ffi::F32>>()     \
      .Ret<ffi::Buffer<ffi::F32>>()     \
      .Ret<ffi::Buffer<ffi::F32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxContractionsVjpVjp, SecondOrder,
                              APAX_THREE_TO_TWO.Attr<int64_t>("n_contr").Attr<int64_t>("n_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxBesselBasis, BesselBasis,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("n_basis")
                                  .Attr<double>("r_max")
                                  .Attr<int64_t>("n_threads"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(ApaxMonomialsPullback, MonomialsPullback,
                              APAX_THREE_TO_TWO.Attr<int64_t>("n_threads"));
