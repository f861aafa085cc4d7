/* Our runner, linked with `-Wl,--wrap=main` (C++: compiled with the program; Rust:
   as C, an object of its own). Its one entry in .preinit_array, the first code of the program that
   runs (a check after linking refuses any other .preinit_array entry and any ifunc), reads
   the token from fd 3 and closes it; __wrap_main runs the program's main and writes the token
   on fd 4 only when main returned 0. Raw system calls only: a program that defines read() or
   write() of its own is never called by this code. */
#ifdef __cplusplus
extern "C" {
#endif
int __real_main(int, char **, char **);
int __wrap_main(int, char **, char **);
#ifdef __cplusplus
}
#endif

#if defined(__x86_64__)
#define WC_READ 0
#define WC_WRITE 1
#define WC_CLOSE 3
static long wc_syscall(long n, long a, long b, long c) {
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}
#elif defined(__aarch64__)
#define WC_READ 63
#define WC_WRITE 64
#define WC_CLOSE 57
static long wc_syscall(long n, long a, long b, long c) {
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2) : "memory");
    return x0;
}
#else
#error "the runner knows the system calls of x86_64 and aarch64 only"
#endif

#define WC_MAX 256
static volatile char wc_line[WC_MAX + 8]; /* "PASS <token>\n", internal to this file */
static volatile long wc_len;

static void wc_read_token(int argc, char **argv, char **envp) {
    long used = 5, n;
    (void)argc, (void)argv, (void)envp;
    wc_line[0] = 'P', wc_line[1] = 'A', wc_line[2] = 'S', wc_line[3] = 'S', wc_line[4] = ' ';
    while (used < WC_MAX && (n = wc_syscall(WC_READ, 3, (long)(wc_line + used), WC_MAX - used)) > 0)
        used += n;
    wc_syscall(WC_CLOSE, 3, 0, 0);
    while (used > 5 && (wc_line[used - 1] == '\n' || wc_line[used - 1] == ' ')) used--;
    wc_line[used] = '\n';
    wc_len = used > 5 ? used + 1 : 0;
}

__attribute__((used, section(".preinit_array")))
static void (*const wc_preinit)(int, char **, char **) = wc_read_token;

int __wrap_main(int argc, char **argv, char **envp) {
    long i, len = wc_len;
    int rc;
#ifdef WC_ARGS
    /* the program's arguments as the plan gives them, whatever code before main did to argv */
    static const char *const wc_args[] = {WC_ARGS};
    if (argc != (int)(sizeof wc_args / sizeof wc_args[0])) return 2;
    for (i = 0; i < argc; i++) argv[i] = (char *)wc_args[i];
    argv[argc] = 0;
#endif
    rc = __real_main(argc, argv, envp);
    if (rc == 0 && len > 0 && wc_syscall(WC_WRITE, 4, (long)wc_line, len) != len) rc = 2;
    for (i = 0; i < WC_MAX + 8; i++) wc_line[i] = 0;
    return rc;
}
