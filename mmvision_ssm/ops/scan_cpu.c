/* Selective scan (mamba-ssm semantics) for the CPU: one pass over a channel's sequence forward,
 * and one recompute plus one reverse pass backward. Built on first use by scan_cpu.py with the
 * system C compiler (with OpenMP when it has it) and called through ctypes (no Python or torch
 * headers: it compiles in about a second).
 *
 * Why C: the recurrence steps along time, so in op-at-a-time PyTorch every step, or every pass of
 * a chunked scan over whole tensors, is a dispatcher call; here a channel's sequence stays in
 * cache while everything about it is computed (softplus, exp, the state, the output, and in the
 * backward every gradient).
 *
 * Layouts (scan_cpu.py makes them): u, delta, z and the per-channel outputs (b, d, l); A (d, n);
 * B and C time-major per group (b, g, l, n), so one token's n values are contiguous and the loops
 * over the state vectorise. float32 throughout; the reductions over time (dA, dD, d bias) are
 * summed in double per block of tokens.
 *
 * exp2, the softplus' log1p and the sigmoid are polynomials in plain arithmetic, so the compiler
 * vectorises the loops over tokens without -ffast-math (glibc's vector expf needs it, and it
 * would let the compiler assume that NaN never occurs: NaN must come out as NaN). */
#include <stdint.h>
#include <string.h>
#include <math.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#define SCAN_X86 1
#endif

#define LOG2E 1.4426950408889634f
/* exp2 arguments are clamped 8 binades above float32's smallest normal, as in the torch backend:
 * factors that small contribute nothing next to O(1) inputs, and denormal operands are slow. */
#define EXP2_FLOOR (-118.0f)
#define EXP2_CEIL 127.0f
/* softplus(x) is x above this (F.softplus, mamba-ssm and our other backends) */
#define SOFTPLUS_THRESHOLD 20.0f
/* tokens per block of the float accumulators before they are added into double sums */
#define SUM_BLOCK 256

typedef struct {
    int64_t b, d, l, n, g, splits, softplus;
    const float *u, *delta, *A, *B, *C, *D, *z, *bias;
    float *y, *last;                  /* forward outputs; last (b, d, n) may be NULL */
    const float *gy, *glast;          /* backward inputs; glast may be NULL */
    float *gu, *gdelta, *gz;          /* (b, d, l); gz only with z */
    float *gA, *gD, *gbias;           /* per batch: (b, d, n), (b, d), (b, d) */
    float *gB, *gC;                   /* partial sums (splits, b, g, l, n), zeroed by the caller */
} Scan;

static inline float bits_to_float(int32_t i) {
    union { int32_t i; float f; } v = {i};  /* a memcpy here stops GCC 12 vectorising */
    return v.f;
}

/* 1.5 * 2^23: adding and subtracting it rounds |x| < 2^22 to the nearest integer. floorf would
 * vectorise only under -fno-trapping-math. */
#define ROUND_MAGIC 12582912.0f

/* 2^x with x clamped to [EXP2_FLOOR, EXP2_CEIL]: 2^k times a degree-6 Taylor polynomial of
 * 2^f on |f| <= 1/2 (relative error ~1e-7, about an ulp). */
static inline float exp2_f(float x) {
    x = x < EXP2_FLOOR ? EXP2_FLOOR : x;
    x = x > EXP2_CEIL ? EXP2_CEIL : x;
    float k = (x + ROUND_MAGIC) - ROUND_MAGIC;
    float f = x - k;  /* |f| <= 1/2 */
    float p = 1.5403530393381608e-4f;
    p = p * f + 1.3333558146428443e-3f;
    p = p * f + 9.6181291076284772e-3f;
    p = p * f + 5.5504108664821580e-2f;
    p = p * f + 2.4022650695910071e-1f;
    p = p * f + 6.9314718055994531e-1f;
    p = p * f + 1.0f;
    return p * bits_to_float(((int32_t)k + 127) << 23);
}

/* log(1 + e) for 0 <= e <= 1 as 2 atanh(s), s = e / (2 + e) <= 1/3: an odd series with no
 * cancellation for small e (relative error ~2e-8 from truncation). */
static inline float log1p_unit(float e) {
    float s = e / (2.0f + e);
    float s2 = s * s;
    float p = 2.0f / 13.0f;
    p = p * s2 + 2.0f / 11.0f;
    p = p * s2 + 2.0f / 9.0f;
    p = p * s2 + 2.0f / 7.0f;
    p = p * s2 + 2.0f / 5.0f;
    p = p * s2 + 2.0f / 3.0f;
    p = p * s2 + 2.0f;
    return s * p;
}

static inline float softplus_f(float x) {
    float e = exp2_f(-fabsf(x) * LOG2E);
    float sp = (x > 0.0f ? x : 0.0f) + log1p_unit(e);
    return x > SOFTPLUS_THRESHOLD ? x : sp;
}

/* 1 / (1 + exp(-x)) from exp(-|x|) <= 1: no overflow for either sign */
static inline float sigmoid_f(float x) {
    float e = exp2_f(-fabsf(x) * LOG2E);
    float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
}

/* Flush denormals to zero while a call runs (restored after): products of small states and
 * factors would otherwise take the slow microcode path. The results differ from IEEE only below
 * 1.2e-38. */
typedef struct { unsigned int csr; } FpMode;

static inline FpMode fast_fp_enter(void) {
    FpMode m = {0};
#ifdef SCAN_X86
    m.csr = _mm_getcsr();
    _mm_setcsr(m.csr | 0x8040);  /* FTZ | DAZ */
#endif
    return m;
}

static inline void fast_fp_leave(FpMode m) {
#ifdef SCAN_X86
    _mm_setcsr(m.csr);
#else
    (void)m;
#endif
}

/* With d_state 1 (VMamba) ROWS1 channels of one B/C group run together: each channel's
 * recurrence is a chain of dependent multiply-adds, and interleaving channels hides its latency
 * (and they share B and C). */
#define ROWS1 4

/* One channel: its inputs, and where its per-token rows live in the workspace. */
typedef struct {
    const float *u, *delta, *z, *B, *C, *A, *g;  /* g: the gradient of the un-gated output */
    float bias, D;
    int64_t row;                                 /* batch * d + channel */
    float *dt, *dtu, *ypre, *gbuf, *dsp, *a, *h; /* workspace rows; a and h l x n */
    float *lanes;  /* d_state > 1: per token the 8 lanes of two sums over the state (l x 16) */
} Row;

/* 8 floats: the vector width of the d_state > 1 code */
#define V8 8

static int64_t row_floats(int64_t l, int64_t n) {
    return 5 * l + 2 * l * n + (n > 1 ? 2 * V8 * l : 0);
}

/* Channels' rows a thread holds at once: ROWS1 with d_state 1, else one. */
static int64_t row_slots(int64_t n) { return n == 1 ? ROWS1 : 1; }

/* Workspace one thread needs (floats): its channels' rows, then the adjoint's start and the last
 * states (ROWS1 * n each). */
/* The state size the C code runs for d_state n: d_state > 1 padded to whole vectors of V8
 * (scan_cpu.py pads A, B, C and the last state's gradient with zeros to it). */
int64_t scan_padded_state(int64_t n) {
    return n == 1 ? 1 : (n + V8 - 1) / V8 * V8;
}

int64_t scan_workspace_floats(int64_t l, int64_t n) {
    return row_slots(n) * row_floats(l, n) + 2 * ROWS1 * n;
}

static Row row_at(const Scan *s, int64_t bi, int64_t c, float *ws, int slot) {
    const int64_t l = s->l, n = s->n, grp = (bi * s->g + c / (s->d / s->g)) * l * n;
    Row r;
    r.row = bi * s->d + c;
    r.u = s->u + r.row * l;
    r.delta = s->delta + r.row * l;
    r.z = s->z ? s->z + r.row * l : NULL;
    r.B = s->B + grp;
    r.C = s->C + grp;
    r.A = s->A + c * n;
    r.g = NULL;
    r.bias = s->bias ? s->bias[c] : 0.0f;
    r.D = s->D ? s->D[c] : 0.0f;
    float *p = ws + slot * row_floats(l, n);
    r.dt = p; r.dtu = p + l; r.ypre = p + 2 * l; r.gbuf = p + 3 * l; r.dsp = p + 4 * l;
    r.a = p + 5 * l; r.h = r.a + l * n; r.lanes = r.h + l * n;
    return r;
}

/* dt, dt*u and a = exp(dt A) for every token (and state): vector loops over time. */
static void prepare(const Scan *s, const Row *r) {
    const int64_t l = s->l, n = s->n;
    float *dt = r->dt, *dtu = r->dtu, *a = r->a;
    const float *delta = r->delta, *u = r->u, bias = r->bias;
    if (s->softplus) {
#pragma omp simd
        for (int64_t t = 0; t < l; t++) dt[t] = softplus_f(delta[t] + bias);
    } else {
#pragma omp simd
        for (int64_t t = 0; t < l; t++) dt[t] = delta[t] + bias;
    }
#pragma omp simd
    for (int64_t t = 0; t < l; t++) dtu[t] = dt[t] * u[t];
    if (n == 1) {
        const float a2 = r->A[0] * LOG2E;
#pragma omp simd
        for (int64_t t = 0; t < l; t++) a[t] = exp2_f(dt[t] * a2);
        return;
    }
    for (int64_t t = 0; t < l; t++) {
        const float x = dt[t] * LOG2E;
#pragma omp simd
        for (int64_t k = 0; k < n; k++) a[t * n + k] = x * r->A[k];
    }
#pragma omp simd
    for (int64_t i = 0; i < l * n; i++) a[i] = exp2_f(a[i]);
}

/* d_state 1: the recurrence of R channels of one group, interleaved. Writes the un-gated output
 * to y[r], the states to r.h with keep_states, and the last states to last[r]. */
static inline __attribute__((always_inline)) void chain1(
        const Scan *s, const Row *rows, float *const *y, float *last, int R, int keep_states) {
    const float *B = rows[0].B, *C = rows[0].C;
    const float *a[ROWS1], *dtu[ROWS1], *u[ROWS1];
    float *hs[ROWS1], h[ROWS1], D[ROWS1];
    for (int r = 0; r < R; r++) {
        a[r] = rows[r].a; dtu[r] = rows[r].dtu; u[r] = rows[r].u; hs[r] = rows[r].h;
        D[r] = rows[r].D; h[r] = 0.0f;
    }
    for (int64_t t = 0; t < s->l; t++) {
        const float bt = B[t], ct = C[t];
        for (int r = 0; r < R; r++) {
            h[r] = a[r][t] * h[r] + dtu[r][t] * bt;
            if (keep_states) hs[r][t] = h[r];
            y[r][t] = h[r] * ct + D[r] * u[r][t];
        }
    }
    for (int r = 0; r < R; r++) last[r] = h[r];
}

/* d_state > 1 in explicit 8-float vectors (GCC/clang vector extensions): scan_cpu.py pads the
 * state to a multiple of 8 with zero A, B and C, which stay zero states. Auto-vectorised, the
 * sums over the state went through memory one lane at a time. */
typedef float v8f __attribute__((vector_size(32)));

static inline v8f load8(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store8(float *p, v8f v) { memcpy(p, &v, sizeof v); }

/* The state vectors are locals: for up to 4 (d_state <= 32) the loops below are specialised on
 * their count and the state stays in registers; beyond, in stack memory. */
#define MAX_VECTORS 32  /* d_state <= 256, as mamba-ssm */

/* The largest d_state these state arrays hold (scan_cpu.py refuses more, and the dispatcher
 * asks this rather than keeping a copy of it). */
int64_t scan_max_state(void) { return V8 * MAX_VECTORS; }

/* The sum of 8 consecutive floats, in a tree (vectorises across tokens in a loop over them). */
static inline float sum8(const float *p) {
    return ((p[0] + p[4]) + (p[1] + p[5])) + ((p[2] + p[6]) + (p[3] + p[7]));
}

/* d_state > 1: one channel, nv vectors of state; last (n floats) gets the last state. The output's
 * sum over the state is left in 8 lanes per token (r->lanes) and finished by a vector loop over
 * time: a horizontal sum per token inside the recurrence cost more than the recurrence. */
static inline __attribute__((always_inline)) void chain_v(
        const Scan *s, const Row *r, float *y, float *last, int keep_states, const int64_t nv) {
    const int64_t l = s->l, n = s->n;
    v8f h[MAX_VECTORS];
    for (int64_t j = 0; j < nv; j++) h[j] = (v8f){0};
    for (int64_t t = 0; t < l; t++) {
        const float *at = r->a + t * n, *bt = r->B + t * n, *ct = r->C + t * n;
        const float x = r->dtu[t];
        v8f acc = {0};
        for (int64_t j = 0; j < nv; j++) {
            h[j] = load8(at + V8 * j) * h[j] + x * load8(bt + V8 * j);
            if (keep_states) store8(r->h + t * n + V8 * j, h[j]);
            acc += h[j] * load8(ct + V8 * j);
        }
        store8(r->lanes + V8 * t, acc);
    }
    for (int64_t j = 0; j < nv; j++) store8(last + V8 * j, h[j]);
    const float *lanes = r->lanes, *u = r->u, D = r->D;
#pragma omp simd
    for (int64_t t = 0; t < l; t++) y[t] = sum8(lanes + V8 * t) + D * u[t];
}

static void chain(const Scan *s, const Row *r, float *y, float *last, int keep_states) {
    switch (s->n / V8) {
    case 1: chain_v(s, r, y, last, keep_states, 1); break;
    case 2: chain_v(s, r, y, last, keep_states, 2); break;
    case 3: chain_v(s, r, y, last, keep_states, 3); break;
    case 4: chain_v(s, r, y, last, keep_states, 4); break;
    default: chain_v(s, r, y, last, keep_states, s->n / V8); break;
    }
}

/* The recurrence of R (<= ROWS1; 1 unless d_state is 1) channels; last: R * n floats. */
static void run_chain(const Scan *s, const Row *rows, float *const *y, float *last, int R,
                      int keep_states) {
    if (s->n > 1) {
        chain(s, rows, y[0], last, keep_states);
        return;
    }
    switch (R) {  /* a constant R each: the channels' states stay in registers */
    case 4: chain1(s, rows, y, last, 4, keep_states); break;
    case 3: chain1(s, rows, y, last, 3, keep_states); break;
    case 2: chain1(s, rows, y, last, 2, keep_states); break;
    default: chain1(s, rows, y, last, 1, keep_states); break;
    }
}

/* How many channels from channel c on (before c_end) run together: up to ROWS1 of one group
 * with d_state 1, else one. */
static int rows_together(const Scan *s, int64_t c, int64_t c_end) {
    if (s->n > 1) return 1;
    const int64_t hd = s->d / s->g, group_end = (c / hd + 1) * hd;
    int64_t R = c_end - c;
    if (group_end - c < R) R = group_end - c;
    return R < ROWS1 ? (int)R : ROWS1;
}

/* y of rows [row0, row1) (row = batch * d + channel), gated by silu(z) when z is given. */
static void forward_span(const Scan *s, int64_t row0, int64_t row1, float *ws) {
    FpMode mode = fast_fp_enter();
    const int64_t l = s->l, n = s->n;
    float *state = ws + row_slots(n) * row_floats(l, n);
    for (int64_t row = row0; row < row1;) {
        const int64_t bi = row / s->d, c = row % s->d;
        const int64_t c_end = row1 - bi * s->d < s->d ? row1 - bi * s->d : s->d;
        const int R = rows_together(s, c, c_end);
        Row rows[ROWS1];
        float *y[ROWS1];
        for (int r = 0; r < R; r++) {
            rows[r] = row_at(s, bi, c + r, ws, r);
            y[r] = s->y + (row + r) * l;
            prepare(s, &rows[r]);
        }
        run_chain(s, rows, y, state, R, 0);
        for (int r = 0; r < R; r++) {
            if (s->z) {
                const float *z = rows[r].z;
                float *yr = y[r];
#pragma omp simd
                for (int64_t t = 0; t < l; t++) yr[t] *= z[t] * sigmoid_f(z[t]);
            }
            if (s->last) memcpy(s->last + (row + r) * n, state + r * n, n * sizeof(float));
        }
        row += R;
    }
    fast_fp_leave(mode);
}

/* The gradient reaching the un-gated output (and dz), and softplus' = sigmoid(delta + bias). */
static void prepare_grad(const Scan *s, Row *r) {
    const int64_t l = s->l;
    const float *gy = s->gy + r->row * l;
    r->g = gy;
    if (r->z) {  /* y = ypre silu(z): dz = gy ypre silu'(z), g = gy silu(z) */
        const float *z = r->z, *ypre = r->ypre;
        float *gz = s->gz + r->row * l, *g = r->gbuf;
#pragma omp simd
        for (int64_t t = 0; t < l; t++) {
            float sg = sigmoid_f(z[t]);
            gz[t] = gy[t] * ypre[t] * sg * (1.0f + z[t] * (1.0f - sg));
            g[t] = gy[t] * z[t] * sg;
        }
        r->g = g;
    }
    if (s->softplus) {
        const float *delta = r->delta, bias = r->bias;
        float *dsp = r->dsp;
#pragma omp simd
        for (int64_t t = 0; t < l; t++) {
            float x = delta[t] + bias;
            dsp[t] = x > SOFTPLUS_THRESHOLD ? 1.0f : sigmoid_f(x);
        }
    }
}

/* d_state 1, R channels of one group interleaved: the adjoint lam_t = g_t C_t + a_{t+1}
 * lam_{t+1} in reverse (carry = a_t lam_t) into each row's ypre (free after prepare_grad). Only
 * this is a chain; the gradients are then vector loops over time (grads1). carry_in: R floats
 * holding d loss / d last state. */
static inline __attribute__((always_inline)) void adjoint1(
        const Scan *s, const Row *rows, const float *carry_in, int R) {
    const float *C = rows[0].C;
    const float *a[ROWS1], *g[ROWS1];
    float *lam[ROWS1], carry[ROWS1];
    for (int r = 0; r < R; r++) {
        a[r] = rows[r].a; g[r] = rows[r].g; lam[r] = rows[r].ypre; carry[r] = carry_in[r];
    }
    for (int64_t t = s->l - 1; t >= 0; t--) {
        const float ct = C[t];
        for (int r = 0; r < R; r++) {
            const float lt = g[r][t] * ct + carry[r];
            lam[r][t] = lt;
            carry[r] = a[r][t] * lt;
        }
    }
}

/* d_state 1: one channel's gradients from its adjoint (x->ypre), vectorised over time; gB, gC:
 * the group's partial sums. G_t = d loss / d (dt A)_t = lam_t a_t h_{t-1}. */
static void grads1(const Scan *s, const Row *x, float *gB, float *gC) {
    const int64_t l = s->l;
    const float *lam = x->ypre, *a = x->a, *h = x->h, *dt = x->dt, *dtu = x->dtu, *g = x->g;
    const float *u = x->u, *dsp = x->dsp, *B = x->B, A = x->A[0], D = x->D;
    const int softplus = (int)s->softplus;
    float *gu = s->gu + x->row * l, *gdelta = s->gdelta + x->row * l;
    double sumA = 0.0, sumD = 0.0, sumBias = 0.0;
    for (int64_t t0 = 0; t0 < l; t0 += SUM_BLOCK) {
        const int64_t t1 = t0 + SUM_BLOCK < l ? t0 + SUM_BLOCK : l;
        float bA = 0.0f, bD = 0.0f, bBias = 0.0f;
#pragma omp simd reduction(+ : bA, bD, bBias)
        for (int64_t t = t0; t < t1; t++) {
            const float hp = t > 0 ? h[t > 0 ? t - 1 : 0] : 0.0f;
            const float G = lam[t] * a[t] * hp;
            const float gdu = lam[t] * B[t];
            float gdt = G * A + gdu * u[t];
            gdt = softplus ? gdt * dsp[t] : gdt;
            gu[t] = gdu * dt[t] + g[t] * D;
            gdelta[t] = gdt;
            gB[t] += lam[t] * dtu[t];
            gC[t] += g[t] * h[t];
            bA += G * dt[t];
            bD += g[t] * u[t];
            bBias += gdt;
        }
        sumA += bA;
        sumD += bD;
        sumBias += bBias;
    }
    s->gA[x->row] = (float)sumA;
    if (s->gD) s->gD[x->row] = (float)sumD;
    if (s->gbias) s->gbias[x->row] = (float)sumBias;
}

/* d_state > 1: one channel, nv vectors of state (see chain_v); carry (n floats) holds
 * d loss / d last state on entry. */
static inline __attribute__((always_inline)) void reverse_v(
        const Scan *s, const Row *x, float *gB, float *gC, const float *carry_in,
        const int64_t nv) {
    const int64_t l = s->l, n = s->n;
    const float *dt = x->dt, *dtu = x->dtu, *a = x->a, *h = x->h, *g = x->g;
    float *lanes = x->lanes;
    v8f carry[MAX_VECTORS], accA[MAX_VECTORS], A[MAX_VECTORS];
    double sumA[V8 * MAX_VECTORS];
    for (int64_t j = 0; j < nv; j++) {
        carry[j] = load8(carry_in + V8 * j);
        A[j] = load8(x->A + V8 * j);
        accA[j] = (v8f){0};
    }
    for (int64_t k = 0; k < n; k++) sumA[k] = 0.0;
    /* the adjoint, over the state in vectors; the sums over the state of lam B and G A are
     * left in 8 lanes per token and finished by the vector loop over time below */
    for (int64_t t = l - 1; t >= 0; t--) {
        const float gt = g[t], dtt = dt[t], xt = dtu[t];
        const float *at = a + t * n, *ht = h + t * n, *bt = x->B + t * n, *ct = x->C + t * n;
        float *gBt = gB + t * n, *gCt = gC + t * n;
        v8f gdu = {0}, gdtA = {0};
        for (int64_t j = 0; j < nv; j++) {
            const int64_t k = V8 * j;
            const v8f ak = load8(at + k);
            const v8f lam = gt * load8(ct + k) + carry[j];
            const v8f hp = t > 0 ? load8(ht + k - n) : (v8f){0};
            const v8f G = lam * ak * hp;  /* d loss / d (dt A) at t */
            store8(gCt + k, load8(gCt + k) + gt * load8(ht + k));
            store8(gBt + k, load8(gBt + k) + lam * xt);
            accA[j] += G * dtt;
            gdtA += G * A[j];
            gdu += lam * load8(bt + k);
            carry[j] = ak * lam;
        }
        store8(lanes + 2 * V8 * t, gdu);
        store8(lanes + 2 * V8 * t + V8, gdtA);
        if (t % SUM_BLOCK == 0) {
            for (int64_t j = 0; j < nv; j++) {
                for (int i = 0; i < V8; i++) sumA[V8 * j + i] += accA[j][i];
                accA[j] = (v8f){0};
            }
        }
    }
    for (int64_t k = 0; k < n; k++) s->gA[x->row * n + k] = (float)sumA[k];
    /* per token: gdu = sum(lam B), gdt = sum(G A) + gdu u */
    const float *u = x->u, *dsp = x->dsp, D = x->D;
    const int softplus = (int)s->softplus;
    float *gu = s->gu + x->row * l, *gdelta = s->gdelta + x->row * l;
    double sumD = 0.0, sumBias = 0.0;
    for (int64_t t0 = 0; t0 < l; t0 += SUM_BLOCK) {
        const int64_t t1 = t0 + SUM_BLOCK < l ? t0 + SUM_BLOCK : l;
        float bD = 0.0f, bBias = 0.0f;
#pragma omp simd reduction(+ : bD, bBias)
        for (int64_t t = t0; t < t1; t++) {
            const float gdu = sum8(lanes + 2 * V8 * t), gdtA = sum8(lanes + 2 * V8 * t + V8);
            float gdt = gdtA + gdu * u[t];
            gdt = softplus ? gdt * dsp[t] : gdt;
            gu[t] = gdu * dt[t] + g[t] * D;
            gdelta[t] = gdt;
            bD += g[t] * u[t];
            bBias += gdt;
        }
        sumD += bD;
        sumBias += bBias;
    }
    if (s->gD) s->gD[x->row] = (float)sumD;
    if (s->gbias) s->gbias[x->row] = (float)sumBias;
}

static void reverse(const Scan *s, const Row *x, float *gB, float *gC, const float *carry) {
    switch (s->n / V8) {
    case 1: reverse_v(s, x, gB, gC, carry, 1); break;
    case 2: reverse_v(s, x, gB, gC, carry, 2); break;
    case 3: reverse_v(s, x, gB, gC, carry, 3); break;
    case 4: reverse_v(s, x, gB, gC, carry, 4); break;
    default: reverse_v(s, x, gB, gC, carry, s->n / V8); break;
    }
}

/* Gradients of units [unit0, unit1): a unit is (split, batch, group) and owns the channels
 * split * step ... of its group, so that no two units add into the same partial dB / dC. */
static void backward_span(const Scan *s, int64_t unit0, int64_t unit1, float *ws) {
    FpMode mode = fast_fp_enter();
    const int64_t l = s->l, n = s->n, hd = s->d / s->g;
    const int64_t step = (hd + s->splits - 1) / s->splits;
    float *carry = ws + row_slots(n) * row_floats(l, n), *last = carry + ROWS1 * n;
    for (int64_t unit = unit0; unit < unit1; unit++) {
        const int64_t split = unit / (s->b * s->g), bg = unit % (s->b * s->g);
        const int64_t bi = bg / s->g, gi = bg % s->g;
        const int64_t part = ((split * s->b + bi) * s->g + gi) * l * n;
        const int64_t c0 = gi * hd + split * step;
        const int64_t c1 = c0 + step < (gi + 1) * hd ? c0 + step : (gi + 1) * hd;
        for (int64_t c = c0; c < c1;) {
            const int R = rows_together(s, c, c1);
            Row rows[ROWS1];
            float *y[ROWS1];
            for (int r = 0; r < R; r++) {
                rows[r] = row_at(s, bi, c + r, ws, r);
                y[r] = rows[r].ypre;
                prepare(s, &rows[r]);
            }
            run_chain(s, rows, y, last, R, 1);
            for (int r = 0; r < R; r++) {
                prepare_grad(s, &rows[r]);
                for (int64_t k = 0; k < n; k++)  /* d loss / d last state starts the adjoint */
                    carry[r * n + k] = s->glast ? s->glast[rows[r].row * n + k] : 0.0f;
            }
            if (n > 1) {
                reverse(s, &rows[0], s->gB + part, s->gC + part, carry);
            } else {
                switch (R) {
                case 4: adjoint1(s, rows, carry, 4); break;
                case 3: adjoint1(s, rows, carry, 3); break;
                case 2: adjoint1(s, rows, carry, 2); break;
                default: adjoint1(s, rows, carry, 1); break;
                }
                for (int r = 0; r < R; r++) grads1(s, &rows[r], s->gB + part, s->gC + part);
            }
            c += R;
        }
    }
    fast_fp_leave(mode);
}

/* The entry points: [0, units) in `threads` contiguous spans, span i with workspace
 * ws + i * ws_floats. Built with OpenMP, the spans run on the process's OpenMP threads: with
 * torch's libgomp already loaded, the loader hands this library the same runtime (one SONAME),
 * so the threads torch's own ops just used, still spinning, take the spans (a second thread
 * pool would fight them for the cores). Without OpenMP the spans run one after another. */
void scan_forward(const Scan *s, int64_t units, float *ws, int64_t ws_floats, int64_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int64_t i = 0; i < threads; i++)
        forward_span(s, units * i / threads, units * (i + 1) / threads, ws + i * ws_floats);
}

void scan_backward(const Scan *s, int64_t units, float *ws, int64_t ws_floats, int64_t threads) {
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int64_t i = 0; i < threads; i++)
        backward_span(s, units * i / threads, units * (i + 1) / threads, ws + i * ws_floats);
}
