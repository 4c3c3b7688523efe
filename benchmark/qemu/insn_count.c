/*
 * Guest instructions executed between two markers, for QEMU 7.2 user mode (plugin API 1).
 *
 * The guest marks a window with getppid() syscalls carrying a magic first argument (getppid
 * ignores its arguments): a2 = 1 opens a window, 2 closes it, 0 names a function entry (a3, a
 * guest address) at which a window is split into segments. a3 of an opening marker tags the
 * window; a nonzero a4 asks for a profile: then every segment writes, per translated block that
 * ran, its start address and the instructions it executed there.
 *
 * Each block counts its executions with an inline add, which costs no call; totals are summed
 * from the blocks at the markers, so a window counts whole blocks exactly (a block left early
 * by a fault would be over-counted; the measured code does not fault).
 *
 * Output (out=PATH): "W tag instructions" per window, "S tag segment address instructions"
 * per block and segment of profiled windows.
 *
 * Arguments: out=PATH, magic=NUMBER (as the guest passes it).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define NR_GETPPID 173 /* aarch64 */

struct block {
    uint64_t vaddr;
    uint64_t insns;
    uint64_t execs;
    struct block *next;
};

static struct block *blocks;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static FILE *out;
static uint64_t magic;
static uint64_t split_at;
static int open_window;
static uint64_t tag, profile, segment, total;

/* Adds what the blocks executed since the last call to the window (and, when profiling,
 * writes it as the current segment), then starts them from zero again. */
static void collect(void)
{
    for (struct block *b = blocks; b; b = b->next) {
        if (!b->execs) {
            continue;
        }
        uint64_t insns = b->execs * b->insns;
        total += insns;
        if (profile) {
            fprintf(out, "S %" PRIu64 " %" PRIu64 " 0x%" PRIx64 " %" PRIu64 "\n",
                    tag, segment, b->vaddr, insns);
        }
        b->execs = 0;
    }
}

static void on_split(unsigned int vcpu_index, void *userdata)
{
    if (open_window && profile) {
        pthread_mutex_lock(&lock);
        collect();
        segment++;
        pthread_mutex_unlock(&lock);
    }
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num,
                       uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                       uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != NR_GETPPID || a1 != magic) {
        return;
    }
    pthread_mutex_lock(&lock);
    if (a2 == 0) {
        split_at = a3;
    } else if (a2 == 1) {
        for (struct block *b = blocks; b; b = b->next) {
            b->execs = 0;
        }
        open_window = 1;
        tag = a3;
        profile = a4;
        segment = 0;
        total = 0;
    } else if (a2 == 2 && open_window) {
        collect();
        open_window = 0;
        fprintf(out, "W %" PRIu64 " %" PRIu64 "\n", tag, total);
        fflush(out);
    }
    pthread_mutex_unlock(&lock);
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    struct block *b = calloc(1, sizeof(*b));
    if (!b) {
        abort();
    }
    b->vaddr = qemu_plugin_tb_vaddr(tb);
    b->insns = qemu_plugin_tb_n_insns(tb);
    pthread_mutex_lock(&lock);
    b->next = blocks;
    blocks = b;
    pthread_mutex_unlock(&lock);
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->execs, 1);
    if (split_at && b->vaddr == split_at) {
        qemu_plugin_register_vcpu_tb_exec_cb(tb, on_split, QEMU_PLUGIN_CB_NO_REGS, NULL);
    }
}

static void on_guest_exit(qemu_plugin_id_t id, void *userdata)
{
    fclose(out);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "out=", 4) == 0) {
            path = argv[i] + 4;
        } else if (strncmp(argv[i], "magic=", 6) == 0) {
            magic = strtoull(argv[i] + 6, NULL, 0);
        } else {
            fprintf(stderr, "insn_count: unknown argument %s\n", argv[i]);
            return -1;
        }
    }
    if (!path || !magic || !(out = fopen(path, "w"))) {
        fprintf(stderr, "insn_count: needs out=PATH (writable) and magic=NUMBER\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_guest_exit, NULL);
    return 0;
}
