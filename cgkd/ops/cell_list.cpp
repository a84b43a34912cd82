// The Verlet list of the fused kernels (cgkd.ops): a cell-list pair search in C++, the same
// pairs in the same order as cgkd.models.neighbors.pair_search finds with tensor operations
// (sorted by first, then second bead), several times faster. Units: nm.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// Every pair within ``cutoff`` once, as first < second sorted by (first, second), with the
// lattice shifts that give the minimum-image vector x_second - x_first - shifts @ box. The
// cell list of cgkd.models.neighbors.pair_search (there in tensor operations): fractional
// coordinates, floor(width / cutoff) cells along each box vector (at least 1), and a half
// stencil of 14 unwrapped neighbour cells, so each (bead, bead, image) triple is examined at
// most once and, with the cutoff below half the smallest width, no pair is found twice.
template <typename T>
void half_pair_search(const T* x, const T* box, int64_t n_beads, T cutoff,
                      std::vector<int64_t>& first, std::vector<int64_t>& second,
                      std::vector<T>& shifts) {
  // Inverse of the box (rows are box vectors), in double.
  double m[9], inv[9];
  for (int e = 0; e < 9; ++e) m[e] = box[e];
  const double det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6]) +
                     m[2] * (m[3] * m[7] - m[4] * m[6]);
  inv[0] = (m[4] * m[8] - m[5] * m[7]) / det;
  inv[1] = (m[2] * m[7] - m[1] * m[8]) / det;
  inv[2] = (m[1] * m[5] - m[2] * m[4]) / det;
  inv[3] = (m[5] * m[6] - m[3] * m[8]) / det;
  inv[4] = (m[0] * m[8] - m[2] * m[6]) / det;
  inv[5] = (m[2] * m[3] - m[0] * m[5]) / det;
  inv[6] = (m[3] * m[7] - m[4] * m[6]) / det;
  inv[7] = (m[1] * m[6] - m[0] * m[7]) / det;
  inv[8] = (m[0] * m[4] - m[1] * m[3]) / det;
  // Perpendicular widths: volume over the area of the face spanned by the other two vectors.
  int64_t cells[3];
  for (int d = 0; d < 3; ++d) {
    const double* a = m + 3 * ((d + 1) % 3);
    const double* b = m + 3 * ((d + 2) % 3);
    const double cross[3] = {a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                             a[0] * b[1] - a[1] * b[0]};
    const double area = std::sqrt(cross[0] * cross[0] + cross[1] * cross[1] + cross[2] * cross[2]);
    const double width = std::fabs(det) / area;
    cells[d] = std::max<int64_t>(1, static_cast<int64_t>(std::floor(width / (cutoff * (1.0 + 1e-5)))));
  }
  const int64_t n_cells = cells[0] * cells[1] * cells[2];
  // Per bead: the periodic image it is wrapped from (integers) and its cell.
  std::vector<int> image(3 * n_beads);
  std::vector<int64_t> cell3(3 * n_beads), cell(n_beads);
  for (int64_t n = 0; n < n_beads; ++n) {
    for (int d = 0; d < 3; ++d) {
      double f = 0;
      for (int e = 0; e < 3; ++e) f += x[3 * n + e] * inv[3 * e + d];
      const double im = std::floor(f);
      image[3 * n + d] = static_cast<int>(im);
      f -= im;
      cell3[3 * n + d] = std::min<int64_t>(
          std::max<int64_t>(0, static_cast<int64_t>(std::floor(f * cells[d]))), cells[d] - 1);
    }
    cell[n] = (cell3[3 * n] * cells[1] + cell3[3 * n + 1]) * cells[2] + cell3[3 * n + 2];
  }
  // Beads sorted by cell (counting sort, stable), each cell's start, and the wrapped positions
  // in that order as a structure of arrays.
  std::vector<int64_t> start(n_cells + 1, 0), order(n_beads), rank(n_beads);
  for (int64_t n = 0; n < n_beads; ++n) ++start[cell[n] + 1];
  for (int64_t c = 0; c < n_cells; ++c) start[c + 1] += start[c];
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t n = 0; n < n_beads; ++n) {
      rank[n] = fill[cell[n]]++;
      order[rank[n]] = n;
    }
  }
  std::vector<T> sorted(3 * n_beads);
  for (int64_t k = 0; k < n_beads; ++k) {
    const int64_t n = order[k];
    for (int e = 0; e < 3; ++e) {
      sorted[e * n_beads + k] =
          x[3 * n + e] - (image[3 * n] * box[e] + image[3 * n + 1] * box[3 + e] +
                          image[3 * n + 2] * box[6 + e]);
    }
  }
  const T* sx = sorted.data();
  const T* sy = sx + n_beads;
  const T* sz = sy + n_beads;
  const T cutoff2 = cutoff * cutoff;
  struct Found {
    int32_t first, second;
    int32_t lattice[3];
  };
  // Scratch kept between calls (a rebuild every few MD steps): fresh large buffers would cost
  // page faults every time.
  static thread_local std::vector<Found> found;
  static thread_local std::vector<Found> grouped;
  static thread_local std::vector<int64_t> hits;
  found.clear();
  // Cell by cell: the beads of cell c against those of its own cell (later ranks only) and of
  // the 13 neighbour cells at lexicographically positive offsets, unwrapped with their image.
  for (int64_t c0 = 0; c0 < cells[0]; ++c0) {
    for (int64_t c1 = 0; c1 < cells[1]; ++c1) {
      for (int64_t c2 = 0; c2 < cells[2]; ++c2) {
        const int64_t c = (c0 * cells[1] + c1) * cells[2] + c2;
        if (start[c] == start[c + 1]) continue;
        for (int o0 = -1; o0 <= 1; ++o0) {
          for (int o1 = -1; o1 <= 1; ++o1) {
            for (int o2 = -1; o2 <= 1; ++o2) {
              const bool own = o0 == 0 && o1 == 0 && o2 == 0;
              const bool positive = o0 > 0 || (o0 == 0 && (o1 > 0 || (o1 == 0 && o2 > 0)));
              if (!own && !positive) continue;
              const int64_t unwrapped[3] = {c0 + o0, c1 + o1, c2 + o2};
              int64_t neighbour3[3];
              int shift[3];
              for (int d = 0; d < 3; ++d) {
                neighbour3[d] = ((unwrapped[d] % cells[d]) + cells[d]) % cells[d];
                shift[d] = static_cast<int>((unwrapped[d] - neighbour3[d]) / cells[d]);
              }
              const int64_t nc =
                  (neighbour3[0] * cells[1] + neighbour3[1]) * cells[2] + neighbour3[2];
              T translation[3];
              for (int e = 0; e < 3; ++e) {
                translation[e] = shift[0] * box[e] + shift[1] * box[3 + e] + shift[2] * box[6 + e];
              }
              const int64_t end = start[nc + 1];
              if (end - start[nc] > static_cast<int64_t>(hits.size())) hits.resize(end - start[nc]);
              int64_t* hit = hits.data();
              for (int64_t ra = start[c]; ra < start[c + 1]; ++ra) {
                // Candidates are x_b - (x_a - shift @ box), x_a wrapped: its anchor.
                const T ax = sx[ra] - translation[0], ay = sy[ra] - translation[1],
                        az = sz[ra] - translation[2];
                const int64_t begin = own ? ra + 1 : start[nc];
                int64_t n_hits = 0;
                for (int64_t k = begin; k < end; ++k) {  // branch-free: keep k within the cutoff
                  const T dx = sx[k] - ax, dy = sy[k] - ay, dz = sz[k] - az;
                  hit[n_hits] = k;
                  n_hits += (dx * dx + dy * dy + dz * dz < cutoff2) ? 1 : 0;
                }
                const int64_t a = order[ra];
                for (int64_t h = 0; h < n_hits; ++h) {
                  const int64_t b = order[hit[h]];
                  // x_b - x_a - lattice @ box is the pair vector.
                  int lattice[3];
                  for (int d = 0; d < 3; ++d) {
                    lattice[d] = image[3 * b + d] - image[3 * a + d] - shift[d];
                  }
                  const auto i = static_cast<int32_t>(a), j = static_cast<int32_t>(b);
                  if (a < b) {
                    found.push_back({i, j, {lattice[0], lattice[1], lattice[2]}});
                  } else {
                    found.push_back({j, i, {-lattice[0], -lattice[1], -lattice[2]}});
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  // Sorted by (first, second): a counting sort by first, then each bead's few pairs by second.
  const auto total = static_cast<int64_t>(found.size());
  std::vector<int64_t> head(n_beads + 1, 0);
  for (const Found& f : found) ++head[f.first + 1];
  for (int64_t n = 0; n < n_beads; ++n) head[n + 1] += head[n];
  grouped.resize(total);
  {
    std::vector<int64_t> fill(head.begin(), head.end() - 1);
    for (const Found& f : found) grouped[fill[f.first]++] = f;
  }
  for (int64_t n = 0; n < n_beads; ++n) {  // insertion sort: a few dozen pairs per bead
    for (int64_t p = head[n] + 1; p < head[n + 1]; ++p) {
      const Found item = grouped[p];
      int64_t q = p;
      for (; q > head[n] && grouped[q - 1].second > item.second; --q) grouped[q] = grouped[q - 1];
      grouped[q] = item;
    }
  }
  first.resize(total);
  second.resize(total);
  shifts.resize(3 * total);
  for (int64_t p = 0; p < total; ++p) {
    first[p] = grouped[p].first;
    second[p] = grouped[p].second;
    for (int d = 0; d < 3; ++d) shifts[3 * p + d] = static_cast<T>(grouped[p].lattice[d]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> half_pairs(const at::Tensor& positions,
                                                          const at::Tensor& box, double cutoff) {
  TORCH_CHECK(positions.dim() == 2 && positions.size(1) == 3, "positions must be [N, 3]");
  TORCH_CHECK(box.sizes() == at::IntArrayRef({3, 3}), "box must be [3, 3]");
  TORCH_CHECK(positions.size(0) < (int64_t(1) << 31), "more than 2^31 beads");
  const auto x = positions.contiguous();
  at::Tensor first, second, shifts;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "cgkd_half_pairs", [&] {
    std::vector<int64_t> f, s;
    std::vector<scalar_t> sh;
    const auto b = box.to(x.dtype()).contiguous();
    half_pair_search<scalar_t>(x.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), x.size(0),
                               scalar_t(cutoff), f, s, sh);
    const auto n = static_cast<int64_t>(f.size());
    first = at::empty({n}, x.options().dtype(at::kLong));
    second = at::empty({n}, x.options().dtype(at::kLong));
    shifts = at::empty({n, 3}, x.options());
    std::copy(f.begin(), f.end(), first.data_ptr<int64_t>());
    std::copy(s.begin(), s.end(), second.data_ptr<int64_t>());
    std::copy(sh.begin(), sh.end(), shifts.data_ptr<scalar_t>());
  });
  return {first, second, shifts};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(cgkd, m) {
  m.def("half_pairs(Tensor positions, Tensor box, float cutoff) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(cgkd, CPU, m) { m.impl("half_pairs", &half_pairs); }
