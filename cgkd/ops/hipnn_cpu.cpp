// Fused CPU kernels for exported HIP-NN-TS models (loaded by cgkd.ops as torch.ops.cgkd.*).
//
// The first interaction layer of HIP-NN-TS reads one-hot species, so all it needs from the
// pairs is the environment tensor
//     env[i, b, d, k] = sum_{j in N(i), species_j = b} D_d(u_ij) s_k(r_ij),
// with u_ij = (x_j - x_i) / r_ij, D_d the angular factors of tensor order 0, 1 or 2
// (1; u; the traceless u u^T in an orthonormal basis) and s_k the inverse-distance
// sensitivities with the cos^2 cutoff (cgkd/models/hipnn.py). These kernels compute env from
// a half Verlet list (every pair once, in either direction) and, given dE/d env, the gradient
// dE/dx. For a one-block network, the dense layers (per bead) are a kernel too, with their
// gradient derived by hand. A deeper interaction layer reads features, not species: its pair
// sums (feature_environment) and their backward take the features projected by its pair
// weights, and the per-bead layers between run in TorchScript. Another kernel is the pair
// repulsion prior with its gradient.
//
// Work is split into one block of consecutive first beads per thread, each with its own
// accumulation buffer, summed in block order: the result is deterministic for a given thread
// count, and pairs beyond the cutoff (the Verlet skin) change nothing, so a reused list gives
// bit for bit what a fresh one gives. The Verlet list itself comes from cell_list.cpp.
// Units: nm, kJ/mol.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cmath>
#include <vector>

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr double kRoot2 = 1.41421356237309504880;
constexpr double kRoot6 = 2.44948974278317809820;

int n_directions(int64_t order) { return order == 0 ? 1 : (order == 1 ? 4 : 9); }

// Parity of D_d under u -> -u: the environment of the second bead of a pair sees -u.
template <typename T>
constexpr T kParity[9] = {1, -1, -1, -1, 1, 1, 1, 1, 1};

// Pair ranges of n_blocks blocks of consecutive first beads. The list holds every pair once
// with first < second, so bead i heads about N - i pairs: block b starts at bead
// N (1 - sqrt(1 - b / n_blocks)), which gives each block the same share. The bounds depend
// only on N and n_blocks, never on the list, so a longer list (a larger skin) splits the
// pairs within the cutoff the same way.
std::vector<int64_t> block_bounds(const int64_t* first, int64_t n_pairs, int64_t n_beads,
                                  int64_t n_blocks) {
  std::vector<int64_t> bounds(n_blocks + 1, n_pairs);
  bounds[0] = 0;
  for (int64_t b = 1; b < n_blocks; ++b) {
    const double fraction = static_cast<double>(b) / static_cast<double>(n_blocks);
    const auto bead = static_cast<int64_t>(n_beads * (1.0 - std::sqrt(1.0 - fraction)));
    bounds[b] = std::lower_bound(first, first + n_pairs, bead) - first;
  }
  return bounds;
}

void check_list(const at::Tensor& positions, const at::Tensor& box, const at::Tensor& first,
                const at::Tensor& second, const at::Tensor& shifts) {
  TORCH_CHECK(positions.dim() == 2 && positions.size(1) == 3, "positions must be [N, 3]");
  TORCH_CHECK(box.sizes() == at::IntArrayRef({3, 3}), "box must be [3, 3]");
  TORCH_CHECK(first.scalar_type() == at::kLong && second.scalar_type() == at::kLong,
              "pair indices must be int64");
  TORCH_CHECK(first.numel() == second.numel() && shifts.size(0) == first.numel(),
              "first, second and shifts must list the same pairs");
}

// The Verlet list and positions as raw pointers (contiguous, dtype T).
template <typename T>
struct PairList {
  const T* x;
  const T* box;
  const T* shifts;
  const int64_t* first;
  const int64_t* second;
  const int64_t* species;
};

constexpr int kChunk = 32;

// Up to kChunk pairs within the cutoff, as a structure of arrays: bead indices, distance r and
// unit vector u = (x_j - x_i) / r.
template <typename T>
struct PairChunk {
  int n = 0;
  int64_t i[kChunk];
  int64_t j[kChunk];
  T r[kChunk];
  T u[3][kChunk];
};

// Fill ``chunk`` with the next pairs within the cutoff from list entries [p, end); returns
// the entry after the last one examined.
template <typename T>
inline int64_t collect(const PairList<T>& list, int64_t p, int64_t end, T cutoff2,
                       PairChunk<T>& chunk) {
  chunk.n = 0;
  for (; p < end && chunk.n < kChunk; ++p) {
    const int64_t i = list.first[p], j = list.second[p];
    const T* shift = list.shifts + 3 * p;
    T v[3];
    for (int a = 0; a < 3; ++a) {
      v[a] = list.x[3 * j + a] - list.x[3 * i + a] -
             (shift[0] * list.box[a] + shift[1] * list.box[3 + a] + shift[2] * list.box[6 + a]);
    }
    const T r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
    if (!(r2 < cutoff2)) continue;
    const T r = std::sqrt(r2);
    const int q = chunk.n++;
    chunk.i[q] = i;
    chunk.j[q] = j;
    chunk.r[q] = r;
    for (int a = 0; a < 3; ++a) chunk.u[a][q] = v[a] / r;
  }
  return p;
}

// Sensitivities s[q * nu + k] of the chunk's pairs and, with ds, ds/dr.
template <typename T, int NU>
inline void chunk_sensitivities(const PairChunk<T>& chunk, const T* inverse_mu, const T* sigma,
                                int64_t n_sensitivities, T cutoff, T* s, T* ds) {
  const int64_t nu = NU > 0 ? NU : n_sensitivities;
  for (int q = 0; q < chunk.n; ++q) {
    const T r = chunk.r[q];
    const T angle = T(0.5 * kPi) * r / cutoff;
    const T c = std::cos(angle);
    const T phi = c * c;
    const T inv = T(1) / r;
    T* sq = s + q * nu;
    if (ds == nullptr) {
#pragma omp simd
      for (int64_t k = 0; k < nu; ++k) {
        const T z = sigma[k] * (inv - inverse_mu[k]);
        sq[k] = std::exp(T(-0.5) * z * z) * phi;
      }
    } else {
      const T dphi = -T(kPi) / cutoff * c * std::sin(angle);
      T* dsq = ds + q * nu;
#pragma omp simd
      for (int64_t k = 0; k < nu; ++k) {
        const T z = sigma[k] * (inv - inverse_mu[k]);
        const T e = std::exp(T(-0.5) * z * z);
        sq[k] = e * phi;
        dsq[k] = e * (dphi + phi * z * sigma[k] * inv * inv);
      }
    }
  }
}

// Angular factors dirs[q * ND + d] of the chunk's pairs (ND = 1, 4 or 9 for order 0, 1, 2).
template <typename T, int ND>
inline void chunk_directions(const PairChunk<T>& chunk, T* dirs) {
  const T r2 = T(kRoot2), r6 = T(kRoot6);
  for (int q = 0; q < chunk.n; ++q) {
    const T ux = chunk.u[0][q], uy = chunk.u[1][q], uz = chunk.u[2][q];
    T* out = dirs + q * ND;
    out[0] = 1;
    if (ND >= 4) {
      out[1] = ux;
      out[2] = uy;
      out[3] = uz;
    }
    if (ND == 9) {
      out[4] = r2 * ux * uy;
      out[5] = r2 * ux * uz;
      out[6] = r2 * uy * uz;
      out[7] = (ux * ux - uy * uy) / r2;
      out[8] = (2 * uz * uz - ux * ux - uy * uy) / r6;
    }
  }
}

// Pair sums of the list entries [begin, end) into acc [N, S, ND, nu]. NU > 0: nu known at
// compile time (the inner loops then unroll into whole vectors).
template <typename T, int ND, int NU>
__attribute__((target_clones("avx2", "default"))) void environment_block(
    const PairList<T> list, int64_t begin, int64_t end, const T* inverse_mu, const T* sigma,
    int64_t n_sensitivities, int64_t n_species, T cutoff, T* acc) {
  const int64_t nu = NU > 0 ? NU : n_sensitivities;
  const int64_t row = ND * nu;
  PairChunk<T> chunk;
  std::vector<T> s(kChunk * nu);
  T dirs[kChunk * ND];
  for (int64_t p = begin; p < end;) {
    p = collect(list, p, end, cutoff * cutoff, chunk);
    chunk_sensitivities<T, NU>(chunk, inverse_mu, sigma, nu, cutoff, s.data(), nullptr);
    chunk_directions<T, ND>(chunk, dirs);
    for (int q = 0; q < chunk.n; ++q) {
      const int64_t i = chunk.i[q], j = chunk.j[q];
      T* to_i = acc + (i * n_species + list.species[j]) * row;
      T* to_j = acc + (j * n_species + list.species[i]) * row;
      const T* sq = s.data() + q * nu;
      for (int d = 0; d < ND; ++d) {
        const T di = dirs[q * ND + d];
        const T dj = kParity<T>[d] * di;
        T* row_i = to_i + d * nu;
        T* row_j = to_j + d * nu;
#pragma omp simd
        for (int64_t k = 0; k < nu; ++k) {
          row_i[k] += di * sq[k];
          row_j[k] += dj * sq[k];
        }
      }
    }
  }
}

// dE/dv for the pair vector v = x_j - x_i of chunk pair q, from dE/dD_d (its angular factors)
// and dE/dr.
template <typename T, int ND>
inline void pair_vector_gradient(const PairChunk<T>& chunk, int q, const T* grad_dirs, T grad_r,
                                 T* gv) {
  const T r2c = T(kRoot2), r6c = T(kRoot6);
  const T ux = chunk.u[0][q], uy = chunk.u[1][q], uz = chunk.u[2][q];
  // dE/du from dE/dD through the angular factors.
  T gu[3] = {0, 0, 0};
  if (ND >= 4) {
    gu[0] += grad_dirs[1];
    gu[1] += grad_dirs[2];
    gu[2] += grad_dirs[3];
  }
  if (ND == 9) {
    gu[0] += r2c * (grad_dirs[4] * uy + grad_dirs[5] * uz + grad_dirs[7] * ux) -
             2 * grad_dirs[8] * ux / r6c;
    gu[1] += r2c * (grad_dirs[4] * ux + grad_dirs[6] * uz - grad_dirs[7] * uy) -
             2 * grad_dirs[8] * uy / r6c;
    gu[2] += r2c * (grad_dirs[5] * ux + grad_dirs[6] * uy) + 4 * grad_dirs[8] * uz / r6c;
  }
  const T inv = T(1) / chunk.r[q];
  const T radial = gu[0] * ux + gu[1] * uy + gu[2] * uz;
  gv[0] = grad_r * ux + (gu[0] - radial * ux) * inv;
  gv[1] = grad_r * uy + (gu[1] - radial * uy) * inv;
  gv[2] = grad_r * uz + (gu[2] - radial * uz) * inv;
}

// dE/dx of the list entries [begin, end) into acc [N, 3], given g = dE/d(pair sums).
template <typename T, int ND, int NU>
__attribute__((target_clones("avx2", "default"))) void environment_backward_block(
    const PairList<T> list, int64_t begin, int64_t end, const T* g, const T* inverse_mu,
    const T* sigma, int64_t n_sensitivities, int64_t n_species, T cutoff, T* acc) {
  const int64_t nu = NU > 0 ? NU : n_sensitivities;
  const int64_t row = ND * nu;
  PairChunk<T> chunk;
  std::vector<T> s(kChunk * nu), ds(kChunk * nu);
  T weighted[NU > 0 ? NU : 64];
  std::vector<T> weighted_buffer(NU > 0 || nu <= 64 ? 0 : nu);
  T* w = NU > 0 || nu <= 64 ? weighted : weighted_buffer.data();
  T dirs[kChunk * ND];
  for (int64_t p = begin; p < end;) {
    p = collect(list, p, end, cutoff * cutoff, chunk);
    chunk_sensitivities<T, NU>(chunk, inverse_mu, sigma, nu, cutoff, s.data(), ds.data());
    chunk_directions<T, ND>(chunk, dirs);
    for (int q = 0; q < chunk.n; ++q) {
      const int64_t i = chunk.i[q], j = chunk.j[q];
      const T* gi = g + (i * n_species + list.species[j]) * row;
      const T* gj = g + (j * n_species + list.species[i]) * row;
      const T* sq = s.data() + q * nu;
      const T* dsq = ds.data() + q * nu;
      const T* dq = dirs + q * ND;
      // With A[d][k] = g_i[d][k] + parity_d g_j[d][k]: dE/dD_d = sum_k A[d][k] s_k and
      // dE/dr = sum_k (sum_d D_d A[d][k]) ds_k/dr.
      T grad_dirs[ND];
      for (int64_t k = 0; k < nu; ++k) w[k] = 0;
      for (int d = 0; d < ND; ++d) {
        const T parity = kParity<T>[d];
        const T dd = dq[d];
        const T* row_i = gi + d * nu;
        const T* row_j = gj + d * nu;
        T grad_d = 0;
#pragma omp simd reduction(+ : grad_d)
        for (int64_t k = 0; k < nu; ++k) {
          const T weight = row_i[k] + parity * row_j[k];
          grad_d += weight * sq[k];
          w[k] += dd * weight;
        }
        grad_dirs[d] = grad_d;
      }
      T grad_r = 0;
#pragma omp simd reduction(+ : grad_r)
      for (int64_t k = 0; k < nu; ++k) grad_r += w[k] * dsq[k];
      T gv[3];
      pair_vector_gradient<T, ND>(chunk, q, grad_dirs, grad_r, gv);
      for (int a = 0; a < 3; ++a) {
        acc[3 * j + a] += gv[a];
        acc[3 * i + a] -= gv[a];
      }
    }
  }
}

// The messages of one pair: m_i = sum_k s_k P_j[k] (to i) and m_j = sum_k s_k P_i[k] (to j).
template <typename T>
inline void messages(const T* sq, const T* pj, const T* pi, int64_t nu, int64_t F, T* mi,
                     T* mj) {
  for (int64_t a = 0; a < F; ++a) mi[a] = mj[a] = 0;
  for (int64_t k = 0; k < nu; ++k) {
    const T sk = sq[k];
#pragma omp simd
    for (int64_t a = 0; a < F; ++a) {
      mi[a] += sk * pj[k * F + a];
      mj[a] += sk * pi[k * F + a];
    }
  }
}

// A deeper interaction layer reads features z [N, F_in], not species: its pair sums are
//     env[i, d, a] = sum_{j in N(i)} D_d(u_ij) m_ija,   m_ija = sum_k s_k(r_ij) P[j, k, a],
// with P = z V [N, nu, F] the features projected by the layer's pair weights (projected
// first: F numbers per pair direction instead of nu * F_in). Pair sums of the list entries
// [begin, end) into acc [N, ND, F].
template <typename T, int ND, int NU>
__attribute__((target_clones("avx2", "default"))) void feature_environment_block(
    const PairList<T> list, int64_t begin, int64_t end, const T* projected, int64_t F,
    const T* inverse_mu, const T* sigma, int64_t n_sensitivities, T cutoff, T* acc) {
  const int64_t nu = NU > 0 ? NU : n_sensitivities;
  PairChunk<T> chunk;
  std::vector<T> s(kChunk * nu), mi(F), mj(F);
  T dirs[kChunk * ND];
  for (int64_t p = begin; p < end;) {
    p = collect(list, p, end, cutoff * cutoff, chunk);
    chunk_sensitivities<T, NU>(chunk, inverse_mu, sigma, nu, cutoff, s.data(), nullptr);
    chunk_directions<T, ND>(chunk, dirs);
    for (int q = 0; q < chunk.n; ++q) {
      const int64_t i = chunk.i[q], j = chunk.j[q];
      messages(s.data() + q * nu, projected + j * nu * F, projected + i * nu * F, nu, F,
               mi.data(), mj.data());
      for (int d = 0; d < ND; ++d) {
        const T di = dirs[q * ND + d];
        const T dj = kParity<T>[d] * di;
        T* row_i = acc + (i * ND + d) * F;
        T* row_j = acc + (j * ND + d) * F;
#pragma omp simd
        for (int64_t a = 0; a < F; ++a) {
          row_i[a] += di * mi[a];
          row_j[a] += dj * mj[a];
        }
      }
    }
  }
}

// Given g = dE/d(pair sums) [N, ND, F] of a deeper layer, dE/dx and dE/dP of the list entries
// [begin, end) into acc [N, 3 + nu * F] (per bead: dE/dx, then dE/dP).
template <typename T, int ND, int NU>
__attribute__((target_clones("avx2", "default"))) void feature_environment_backward_block(
    const PairList<T> list, int64_t begin, int64_t end, const T* g, const T* projected,
    int64_t F, const T* inverse_mu, const T* sigma, int64_t n_sensitivities, T cutoff, T* acc) {
  const int64_t nu = NU > 0 ? NU : n_sensitivities;
  const int64_t width = 3 + nu * F;
  PairChunk<T> chunk;
  std::vector<T> s(kChunk * nu), ds(kChunk * nu), mi(F), mj(F), gmi(F), gmj(F);
  T dirs[kChunk * ND];
  for (int64_t p = begin; p < end;) {
    p = collect(list, p, end, cutoff * cutoff, chunk);
    chunk_sensitivities<T, NU>(chunk, inverse_mu, sigma, nu, cutoff, s.data(), ds.data());
    chunk_directions<T, ND>(chunk, dirs);
    for (int q = 0; q < chunk.n; ++q) {
      const int64_t i = chunk.i[q], j = chunk.j[q];
      const T* pi = projected + i * nu * F;
      const T* pj = projected + j * nu * F;
      const T* sq = s.data() + q * nu;
      const T* dsq = ds.data() + q * nu;
      const T* gi = g + i * ND * F;
      const T* gj = g + j * ND * F;
      messages(sq, pj, pi, nu, F, mi.data(), mj.data());
      // dE/dm_i[a] = sum_d D_d g_i[d][a]; dE/dm_j[a] = sum_d parity_d D_d g_j[d][a];
      // dE/dD_d = sum_a m_i[a] g_i[d][a] + parity_d m_j[a] g_j[d][a].
      T grad_dirs[ND];
      for (int64_t a = 0; a < F; ++a) gmi[a] = gmj[a] = 0;
      for (int d = 0; d < ND; ++d) {
        const T di = dirs[q * ND + d];
        const T dj = kParity<T>[d] * di;
        const T* row_i = gi + d * F;
        const T* row_j = gj + d * F;
        T grad_d = 0;
#pragma omp simd reduction(+ : grad_d)
        for (int64_t a = 0; a < F; ++a) {
          gmi[a] += di * row_i[a];
          gmj[a] += dj * row_j[a];
          grad_d += mi[a] * row_i[a] + kParity<T>[d] * mj[a] * row_j[a];
        }
        grad_dirs[d] = grad_d;
      }
      // dE/ds_k = sum_a P_j[k][a] dE/dm_i[a] + P_i[k][a] dE/dm_j[a]; dE/dP_j[k] += s_k dE/dm_i,
      // dE/dP_i[k] += s_k dE/dm_j.
      T* to_pi = acc + i * width + 3;
      T* to_pj = acc + j * width + 3;
      T grad_r = 0;
      for (int64_t k = 0; k < nu; ++k) {
        const T sk = sq[k];
        T grad_s = 0;
#pragma omp simd reduction(+ : grad_s)
        for (int64_t a = 0; a < F; ++a) {
          grad_s += pj[k * F + a] * gmi[a] + pi[k * F + a] * gmj[a];
          to_pj[k * F + a] += sk * gmi[a];
          to_pi[k * F + a] += sk * gmj[a];
        }
        grad_r += grad_s * dsq[k];
      }
      T gv[3];
      pair_vector_gradient<T, ND>(chunk, q, grad_dirs, grad_r, gv);
      for (int a = 0; a < 3; ++a) {
        acc[j * width + a] += gv[a];
        acc[i * width + a] -= gv[a];
      }
    }
  }
}

// Run ``work(block, begin, end, buffer)`` for n_blocks = threads balanced blocks of the list,
// each with a zeroed buffer of ``width`` values per bead, then sum the buffers into ``out``
// in block order.
template <typename T, typename Work>
void over_blocks(const int64_t* first, int64_t n_pairs, int64_t n_beads, int64_t width,
                 T* out, const Work& work) {
  const int64_t n_blocks = std::max<int64_t>(1, at::get_num_threads());
  const auto bounds = block_bounds(first, n_pairs, n_beads, n_blocks);
  const int64_t size = n_beads * width;
  std::vector<T> buffers(n_blocks * size, T(0));
  at::parallel_for(0, n_blocks, 1, [&](int64_t block_begin, int64_t block_end) {
    for (int64_t block = block_begin; block < block_end; ++block) {
      work(bounds[block], bounds[block + 1], buffers.data() + block * size);
    }
  });
  for (int64_t block = 0; block < n_blocks; ++block) {
    const T* buffer = buffers.data() + block * size;
    for (int64_t e = 0; e < size; ++e) out[e] += buffer[e];
  }
}

template <typename T>
PairList<T> pair_list(const at::Tensor& x, const at::Tensor& box, const at::Tensor& first,
                      const at::Tensor& second, const at::Tensor& shifts,
                      const at::Tensor& species) {
  return {x.data_ptr<T>(),          box.data_ptr<T>(),         shifts.data_ptr<T>(),
          first.data_ptr<int64_t>(), second.data_ptr<int64_t>(), species.data_ptr<int64_t>()};
}

// Calls f.template operator()<NU>() with NU = nu for the common sensitivity counts (loops of
// known length) and NU = 0 (any nu) otherwise.
template <typename F>
void with_sensitivities(int64_t nu, const F& f) {
  switch (nu) {
    case 4:
      f.template operator()<4>();
      break;
    case 8:
      f.template operator()<8>();
      break;
    case 16:
      f.template operator()<16>();
      break;
    default:
      f.template operator()<0>();
  }
}

template <typename T, int ND>
void environment_kernel(const PairList<T>& list, int64_t n_beads, int64_t n_pairs,
                        const T* inverse_mu, const T* sigma, int64_t nu, int64_t n_species,
                        T cutoff, T* env) {
  with_sensitivities(nu, [&]<int NU>() {
    over_blocks<T>(list.first, n_pairs, n_beads, n_species * ND * nu, env,
                   [&](int64_t begin, int64_t end, T* buffer) {
                     environment_block<T, ND, NU>(list, begin, end, inverse_mu, sigma, nu,
                                                  n_species, cutoff, buffer);
                   });
  });
}

template <typename T, int ND>
void environment_backward_kernel(const PairList<T>& list, int64_t n_beads, int64_t n_pairs,
                                 const T* g, const T* inverse_mu, const T* sigma, int64_t nu,
                                 int64_t n_species, T cutoff, T* gradient) {
  with_sensitivities(nu, [&]<int NU>() {
    over_blocks<T>(list.first, n_pairs, n_beads, 3, gradient,
                   [&](int64_t begin, int64_t end, T* buffer) {
                     environment_backward_block<T, ND, NU>(list, begin, end, g, inverse_mu, sigma,
                                                           nu, n_species, cutoff, buffer);
                   });
  });
}

template <typename T, int ND>
void feature_environment_kernel(const PairList<T>& list, int64_t n_beads, int64_t n_pairs,
                                const T* projected, int64_t F, const T* inverse_mu,
                                const T* sigma, int64_t nu, T cutoff, T* env) {
  with_sensitivities(nu, [&]<int NU>() {
    over_blocks<T>(list.first, n_pairs, n_beads, ND * F, env,
                   [&](int64_t begin, int64_t end, T* buffer) {
                     feature_environment_block<T, ND, NU>(list, begin, end, projected, F,
                                                          inverse_mu, sigma, nu, cutoff, buffer);
                   });
  });
}

template <typename T, int ND>
void feature_environment_backward_kernel(const PairList<T>& list, int64_t n_beads,
                                         int64_t n_pairs, const T* g, const T* projected,
                                         int64_t F, const T* inverse_mu, const T* sigma,
                                         int64_t nu, T cutoff, T* packed) {
  with_sensitivities(nu, [&]<int NU>() {
    over_blocks<T>(list.first, n_pairs, n_beads, 3 + nu * F, packed,
                   [&](int64_t begin, int64_t end, T* buffer) {
                     feature_environment_backward_block<T, ND, NU>(
                         list, begin, end, g, projected, F, inverse_mu, sigma, nu, cutoff, buffer);
                   });
  });
}

template <typename T>
void repulsion_kernel(const PairList<T>& list, int64_t n_beads, int64_t n_pairs,
                      const bool* excluded, const T* sigma_matrix, int64_t n_species,
                      T epsilon, T switch_factor, T* out) {
  over_blocks<T>(list.first, n_pairs, n_beads, 4, out, [&](int64_t begin, int64_t end, T* acc) {
    for (int64_t p = begin; p < end; ++p) {
      if (excluded[p]) continue;
      const int64_t i = list.first[p], j = list.second[p];
      const T sigma = sigma_matrix[list.species[i] * n_species + list.species[j]];
      const T r_off = sigma * switch_factor;
      const T* shift = list.shifts + 3 * p;
      T v[3];
      for (int a = 0; a < 3; ++a) {
        v[a] = list.x[3 * j + a] - list.x[3 * i + a] -
               (shift[0] * list.box[a] + shift[1] * list.box[3 + a] + shift[2] * list.box[6 + a]);
      }
      const T r2 = v[0] * v[0] + v[1] * v[1] + v[2] * v[2];
      if (!(r2 < r_off * r_off)) continue;
      const T r = std::sqrt(r2);
      const T q = sigma / r;
      const T q6 = q * q * q * q * q * q;
      const T power = epsilon * q6 * q6;
      T sw = 1, dsw = 0;
      if (r > sigma) {
        const T width = r_off - sigma;
        const T angle = T(0.5 * kPi) * (r - sigma) / width;
        const T c = std::cos(angle);
        sw = c * c;
        dsw = -T(kPi) / width * c * std::sin(angle);
      }
      const T energy = power * sw;
      const T grad_r = -12 * power / r * sw + power * dsw;
      acc[4 * i] += T(0.5) * energy;
      acc[4 * j] += T(0.5) * energy;
      for (int a = 0; a < 3; ++a) {
        const T gv = grad_r * v[a] / r;
        acc[4 * j + 1 + a] += gv;
        acc[4 * i + 1 + a] -= gv;
      }
    }
  });
}

// softplus with torch's default threshold (x above 20 passes through) and its derivative, the
// sigmoid, from one exp: e = exp(-|x|), softplus = max(x, 0) + log(1 + e).
template <typename T>
inline T softplus(T x, T* derivative) {
  const T e = std::exp(-std::fabs(x));
  const T inverse = T(1) / (T(1) + e);
  *derivative = x >= 0 ? inverse : e * inverse;
  return x > T(20) ? x : std::max(x, T(0)) + std::log(T(1) + e);
}

// The dense layers of a one-block HIP-NN-TS for beads [begin, end), from h [N, D, F], the pair
// sums contracted with the pair weights: bead energies and, with grad_h, the gradient of their
// sum w.r.t. h (cgkd/models/hipnn.py: InteractionLayer.layout_forward after the environment
// sums, Block, the readouts).
template <typename T>
void dense_beads(int64_t begin, int64_t end, const T* h, const int64_t* species, int64_t D,
                 int64_t F, int64_t L, const T* constants, const T* tensor_weights,
                 const T* atom_weights, const T* atom_biases, const T* readout, T readout_bias,
                 const T* species_energy, T scale, T* energies, T* grad_h) {
  std::vector<T> slope((L + 1) * F), layer_out((L + 1) * F), g(F), gl(F), n1(F, T(1)),
      n2(F, T(1));
  for (int64_t i = begin; i < end; ++i) {
    const T* hi = h + i * D * F;
    const int64_t sp = species[i];
    for (int64_t f = 0; f < F; ++f) {
      T p = constants[sp * F + f] + hi[f];
      if (D >= 4) {
        T sq = T(1e-8);
        for (int64_t d = 1; d < 4; ++d) sq += hi[d * F + f] * hi[d * F + f];
        n1[f] = std::sqrt(sq);
        p += tensor_weights[f] * n1[f];
      }
      if (D == 9) {
        T sq = T(1e-8);
        for (int64_t d = 4; d < 9; ++d) sq += hi[d * F + f] * hi[d * F + f];
        n2[f] = std::sqrt(sq);
        p += tensor_weights[F + f] * n2[f];
      }
      layer_out[f] = softplus(p, &slope[f]);
    }
    for (int64_t l = 0; l < L; ++l) {
      const T* w = atom_weights + l * F * F;
      const T* a = layer_out.data() + l * F;
      T* next = layer_out.data() + (l + 1) * F;
      for (int64_t f = 0; f < F; ++f) {
        T sum = atom_biases[l * F + f];
#pragma omp simd reduction(+ : sum)
        for (int64_t e = 0; e < F; ++e) sum += w[f * F + e] * a[e];
        next[f] = a[f] + softplus(sum, &slope[(l + 1) * F + f]);
      }
    }
    const T* last = layer_out.data() + L * F;
    T energy = species_energy[sp] + readout_bias;
    for (int64_t f = 0; f < F; ++f) energy += readout[f] * last[f];
    energies[i] = energy * scale;
    if (grad_h == nullptr) continue;
    for (int64_t f = 0; f < F; ++f) g[f] = readout[f] * scale;
    for (int64_t l = L - 1; l >= 0; --l) {
      const T* w = atom_weights + l * F * F;
      for (int64_t f = 0; f < F; ++f) gl[f] = g[f] * slope[(l + 1) * F + f];
      for (int64_t f = 0; f < F; ++f) {
        const T lf = gl[f];
#pragma omp simd
        for (int64_t e = 0; e < F; ++e) g[e] += lf * w[f * F + e];
      }
    }
    T* gi = grad_h + i * D * F;
    for (int64_t f = 0; f < F; ++f) {
      const T gp = g[f] * slope[f];
      gi[f] = gp;
      if (D >= 4) {
        const T c1 = gp * tensor_weights[f] / n1[f];
        for (int64_t d = 1; d < 4; ++d) gi[d * F + f] = c1 * hi[d * F + f];
      }
      if (D == 9) {
        const T c2 = gp * tensor_weights[F + f] / n2[f];
        for (int64_t d = 4; d < 9; ++d) gi[d * F + f] = c2 * hi[d * F + f];
      }
    }
  }
}

std::tuple<at::Tensor, at::Tensor> dense(const at::Tensor& pair_sums, const at::Tensor& species,
                                         const at::Tensor& pair_weights,
                                         const at::Tensor& constants,
                                         const at::Tensor& tensor_weights,
                                         const at::Tensor& atom_weights,
                                         const at::Tensor& atom_biases, const at::Tensor& readout,
                                         double readout_bias, const at::Tensor& species_energy,
                                         double scale, bool with_gradient) {
  TORCH_CHECK(pair_sums.dim() == 4, "pair sums must be [N, S, D, nu]");
  const int64_t n_beads = pair_sums.size(0), S = pair_sums.size(1), D = pair_sums.size(2);
  const int64_t nu = pair_sums.size(3), F = pair_weights.size(2), L = atom_weights.size(0);
  TORCH_CHECK(pair_weights.size(0) == nu && pair_weights.size(1) == S,
              "pair weights must be [nu, S, F]");
  const auto dtype = pair_sums.scalar_type();
  // h = sum over species b and sensitivities k of the pair sums times V[k, b]: one product.
  const auto weights = pair_weights.to(dtype).permute({1, 0, 2}).reshape({S * nu, F});
  const auto flat = pair_sums.transpose(1, 2).reshape({n_beads * D, S * nu});
  const auto h = at::mm(flat, weights).contiguous();
  auto energies = at::empty({n_beads}, pair_sums.options());
  auto grad_h = with_gradient ? at::empty_like(h) : at::empty({0}, h.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "cgkd_dense", [&] {
    const auto cast = [&](const at::Tensor& t) { return t.to(dtype).contiguous(); };
    const auto c = cast(constants), t = cast(tensor_weights), aw = cast(atom_weights);
    const auto ab = cast(atom_biases), r = cast(readout), se = cast(species_energy);
    const auto sp = species.contiguous();
    at::parallel_for(0, n_beads, 64, [&](int64_t begin, int64_t end) {
      dense_beads<scalar_t>(begin, end, h.data_ptr<scalar_t>(), sp.data_ptr<int64_t>(), D, F, L,
                            c.data_ptr<scalar_t>(), t.data_ptr<scalar_t>(),
                            aw.data_ptr<scalar_t>(), ab.data_ptr<scalar_t>(),
                            r.data_ptr<scalar_t>(), scalar_t(readout_bias),
                            se.data_ptr<scalar_t>(), scalar_t(scale),
                            energies.data_ptr<scalar_t>(),
                            with_gradient ? grad_h.data_ptr<scalar_t>() : nullptr);
    });
  });
  if (!with_gradient) return {energies, grad_h};
  const auto grad = at::mm(grad_h, weights.t()).view({n_beads, D, S, nu}).transpose(1, 2);
  return {energies, grad.contiguous()};
}

// Calls f.template operator()<ND>() with the number of angular factors of ``order``.
template <typename F>
void with_directions(int64_t order, const F& f) {
  TORCH_CHECK(order >= 0 && order <= 2, "tensor order must be 0, 1 or 2, got ", order);
  if (order == 0) {
    f.template operator()<1>();
  } else if (order == 1) {
    f.template operator()<4>();
  } else {
    f.template operator()<9>();
  }
}

at::Tensor environment(const at::Tensor& positions, const at::Tensor& box,
                       const at::Tensor& first, const at::Tensor& second,
                       const at::Tensor& shifts, const at::Tensor& species,
                       const at::Tensor& inverse_mu, const at::Tensor& sigma, double cutoff,
                       int64_t order, int64_t n_species) {
  check_list(positions, box, first, second, shifts);
  const auto x = positions.contiguous();
  auto env = at::zeros({x.size(0), n_species, n_directions(order), inverse_mu.numel()},
                       x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_environment", [&] {
    const auto b = box.to(x.dtype()).contiguous();
    const auto sh = shifts.to(x.dtype()).contiguous();
    const auto fi = first.contiguous(), se = second.contiguous(), sp = species.contiguous();
    const auto mu = inverse_mu.to(x.dtype()).contiguous();
    const auto sig = sigma.to(x.dtype()).contiguous();
    const auto list = pair_list<scalar_t>(x, b, fi, se, sh, sp);
    with_directions(order, [&]<int ND>() {
      environment_kernel<scalar_t, ND>(list, x.size(0), fi.numel(), mu.data_ptr<scalar_t>(),
                                       sig.data_ptr<scalar_t>(), mu.numel(), n_species,
                                       scalar_t(cutoff), env.data_ptr<scalar_t>());
    });
  });
  return env;
}

at::Tensor environment_backward(const at::Tensor& grad_env, const at::Tensor& positions,
                                const at::Tensor& box, const at::Tensor& first,
                                const at::Tensor& second, const at::Tensor& shifts,
                                const at::Tensor& species, const at::Tensor& inverse_mu,
                                const at::Tensor& sigma, double cutoff, int64_t order) {
  check_list(positions, box, first, second, shifts);
  const auto x = positions.contiguous();
  TORCH_CHECK(grad_env.dim() == 4 && grad_env.size(0) == x.size(0) &&
                  grad_env.size(2) == n_directions(order) &&
                  grad_env.size(3) == inverse_mu.numel(),
              "grad_env must be [N, species, directions, sensitivities]");
  auto gradient = at::zeros_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_environment_backward", [&] {
    const auto g = grad_env.to(x.dtype()).contiguous();
    const auto b = box.to(x.dtype()).contiguous();
    const auto sh = shifts.to(x.dtype()).contiguous();
    const auto fi = first.contiguous(), se = second.contiguous(), sp = species.contiguous();
    const auto mu = inverse_mu.to(x.dtype()).contiguous();
    const auto sig = sigma.to(x.dtype()).contiguous();
    const auto list = pair_list<scalar_t>(x, b, fi, se, sh, sp);
    with_directions(order, [&]<int ND>() {
      environment_backward_kernel<scalar_t, ND>(
          list, x.size(0), fi.numel(), g.data_ptr<scalar_t>(), mu.data_ptr<scalar_t>(),
          sig.data_ptr<scalar_t>(), mu.numel(), g.size(1), scalar_t(cutoff),
          gradient.data_ptr<scalar_t>());
    });
  });
  return gradient;
}

void check_projected(const at::Tensor& projected, const at::Tensor& positions,
                     const at::Tensor& inverse_mu) {
  TORCH_CHECK(projected.dim() == 3 && projected.size(0) == positions.size(0) &&
                  projected.size(1) == inverse_mu.numel(),
              "projected features must be [N, sensitivities, features]");
}

// A deeper layer's inputs, contiguous in the dtype of the positions ``x`` (contiguous).
struct FeatureInputs {
  const at::Tensor& x;
  at::Tensor box, shifts, first, second, projected, inverse_mu, sigma;

  FeatureInputs(const at::Tensor& x, const at::Tensor& box, const at::Tensor& first,
                const at::Tensor& second, const at::Tensor& shifts, const at::Tensor& projected,
                const at::Tensor& inverse_mu, const at::Tensor& sigma)
      : x(x),
        box(box.to(x.dtype()).contiguous()),
        shifts(shifts.to(x.dtype()).contiguous()),
        first(first.contiguous()),
        second(second.contiguous()),
        projected(projected.to(x.dtype()).contiguous()),
        inverse_mu(inverse_mu.to(x.dtype()).contiguous()),
        sigma(sigma.to(x.dtype()).contiguous()) {}

  // The Verlet list (no species: a deeper layer reads features).
  template <typename T>
  PairList<T> list() const {
    return {x.data_ptr<T>(),          box.data_ptr<T>(),         shifts.data_ptr<T>(),
            first.data_ptr<int64_t>(), second.data_ptr<int64_t>(), nullptr};
  }
};

at::Tensor feature_environment(const at::Tensor& positions, const at::Tensor& box,
                               const at::Tensor& first, const at::Tensor& second,
                               const at::Tensor& shifts, const at::Tensor& projected,
                               const at::Tensor& inverse_mu, const at::Tensor& sigma,
                               double cutoff, int64_t order) {
  check_list(positions, box, first, second, shifts);
  check_projected(projected, positions, inverse_mu);
  const auto x = positions.contiguous();
  const int64_t F = projected.size(2);
  auto env = at::zeros({x.size(0), n_directions(order), F}, x.options());
  const FeatureInputs in(x, box, first, second, shifts, projected, inverse_mu, sigma);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_feature_environment", [&] {
    with_directions(order, [&]<int ND>() {
      feature_environment_kernel<scalar_t, ND>(
          in.list<scalar_t>(), x.size(0), in.first.numel(), in.projected.data_ptr<scalar_t>(), F,
          in.inverse_mu.data_ptr<scalar_t>(), in.sigma.data_ptr<scalar_t>(),
          in.inverse_mu.numel(), scalar_t(cutoff), env.data_ptr<scalar_t>());
    });
  });
  return env;
}

std::tuple<at::Tensor, at::Tensor> feature_environment_backward(
    const at::Tensor& grad_env, const at::Tensor& positions, const at::Tensor& box,
    const at::Tensor& first, const at::Tensor& second, const at::Tensor& shifts,
    const at::Tensor& projected, const at::Tensor& inverse_mu, const at::Tensor& sigma,
    double cutoff, int64_t order) {
  check_list(positions, box, first, second, shifts);
  check_projected(projected, positions, inverse_mu);
  const auto x = positions.contiguous();
  const int64_t n_beads = x.size(0), nu = inverse_mu.numel(), F = projected.size(2);
  TORCH_CHECK(grad_env.dim() == 3 && grad_env.size(0) == n_beads &&
                  grad_env.size(1) == n_directions(order) && grad_env.size(2) == F,
              "grad_env must be [N, directions, features]");
  auto packed = at::zeros({n_beads, 3 + nu * F}, x.options());  // dE/dx, then dE/dP
  const FeatureInputs in(x, box, first, second, shifts, projected, inverse_mu, sigma);
  const auto g = grad_env.to(x.dtype()).contiguous();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_feature_environment_backward", [&] {
    with_directions(order, [&]<int ND>() {
      feature_environment_backward_kernel<scalar_t, ND>(
          in.list<scalar_t>(), n_beads, in.first.numel(), g.data_ptr<scalar_t>(),
          in.projected.data_ptr<scalar_t>(), F, in.inverse_mu.data_ptr<scalar_t>(),
          in.sigma.data_ptr<scalar_t>(), nu, scalar_t(cutoff), packed.data_ptr<scalar_t>());
    });
  });
  return {packed.narrow(1, 0, 3).contiguous(),
          packed.narrow(1, 3, nu * F).reshape({n_beads, nu, F})};
}

std::tuple<at::Tensor, at::Tensor> repulsion(const at::Tensor& positions, const at::Tensor& box,
                                             const at::Tensor& first, const at::Tensor& second,
                                             const at::Tensor& shifts, const at::Tensor& species,
                                             const at::Tensor& excluded,
                                             const at::Tensor& sigma_matrix, double epsilon,
                                             double switch_factor) {
  check_list(positions, box, first, second, shifts);
  TORCH_CHECK(excluded.scalar_type() == at::kBool && excluded.numel() == first.numel(),
              "excluded must be one bool per pair");
  const auto x = positions.contiguous();
  auto packed = at::zeros({x.size(0), 4}, x.options());  // energy, then the gradient
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_repulsion", [&] {
    const auto b = box.to(x.dtype()).contiguous();
    const auto sh = shifts.to(x.dtype()).contiguous();
    const auto fi = first.contiguous(), se = second.contiguous(), sp = species.contiguous();
    const auto ex = excluded.contiguous();
    const auto sm = sigma_matrix.to(x.dtype()).contiguous();
    repulsion_kernel<scalar_t>(pair_list<scalar_t>(x, b, fi, se, sh, sp), x.size(0), fi.numel(),
                               ex.data_ptr<bool>(), sm.data_ptr<scalar_t>(), sm.size(0),
                               scalar_t(epsilon), scalar_t(switch_factor),
                               packed.data_ptr<scalar_t>());
  });
  return {packed.select(1, 0).contiguous(), packed.narrow(1, 1, 3).contiguous()};
}

}  // namespace

TORCH_LIBRARY(cgkd, m) {
  m.def(
      "environment(Tensor positions, Tensor box, Tensor first, Tensor second, Tensor shifts, "
      "Tensor species, Tensor inverse_mu, Tensor sigma, float cutoff, int order, "
      "int n_species) -> Tensor");
  m.def(
      "environment_backward(Tensor grad_env, Tensor positions, Tensor box, Tensor first, "
      "Tensor second, Tensor shifts, Tensor species, Tensor inverse_mu, Tensor sigma, "
      "float cutoff, int order) -> Tensor");
  m.def(
      "feature_environment(Tensor positions, Tensor box, Tensor first, Tensor second, "
      "Tensor shifts, Tensor projected, Tensor inverse_mu, Tensor sigma, float cutoff, "
      "int order) -> Tensor");
  m.def(
      "feature_environment_backward(Tensor grad_env, Tensor positions, Tensor box, "
      "Tensor first, Tensor second, Tensor shifts, Tensor projected, Tensor inverse_mu, "
      "Tensor sigma, float cutoff, int order) -> (Tensor, Tensor)");
  m.def(
      "dense(Tensor pair_sums, Tensor species, Tensor pair_weights, Tensor constants, "
      "Tensor tensor_weights, Tensor atom_weights, Tensor atom_biases, Tensor readout, "
      "float readout_bias, Tensor species_energy, float scale, bool with_gradient) -> "
      "(Tensor, Tensor)");
  m.def(
      "repulsion(Tensor positions, Tensor box, Tensor first, Tensor second, Tensor shifts, "
      "Tensor species, Tensor excluded, Tensor sigma_matrix, float epsilon, "
      "float switch_factor) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cgkd, CPU, m) {
  m.impl("environment", &environment);
  m.impl("environment_backward", &environment_backward);
  m.impl("feature_environment", &feature_environment);
  m.impl("feature_environment_backward", &feature_environment_backward);
  m.impl("repulsion", &repulsion);
  m.impl("dense", &dense);
}
