/* The e2e suite's guest for `hypervisor: builtin` (built with vmm/guests/start.S, guest.h
 * and guest.ld): says it is up and prints its kernel command line, echoes what arrives
 * on the serial console line by line (`GV-ECHO <line>`), and on Ctrl+Alt+Del (what
 * gitvisor-vmm's `shutdown` sends, as a Linux init would) says so and resets, which ends
 * the VMM. With `gv.deaf` on its command line it ignores everything and halts, like a
 * guest without an init that reboots: only a hard stop ends it. */
#include "guest.h"

static int contains(const char *text, const char *word) {
    for (; *text; text++) {
        const char *a = text, *b = word;
        while (*a && *b && *a == *b) { a++; b++; }
        if (!*b) return 1;
    }
    return 0;
}

void guest_main(u8 *zero_page) {
    const char *cmdline = (const char *)(u64)*(u32 *)(zero_page + 0x228);
    puts("GV-BUILTIN-UP\n");
    puts("GV-CMDLINE "); puts(cmdline); putc('\n');
    if (contains(cmdline, "gv.deaf")) {
        puts("GV-DEAF\n");
        for (;;) __asm__ volatile("cli; hlt");
    }
    static const u8 wanted[4] = {0x14, 0x11, 0xe0, 0x71};
    u8 seen[4] = {0, 0, 0, 0};
    char line[128];
    u64 length = 0;
    for (;;) {
        /* Each port read is an exit to the VMM: look a few hundred times a second. */
        for (int i = 0; i < 20000; i++) __asm__ volatile("pause");
        while (inb(COM1 + 5) & 1) {
            char c = (char)inb(COM1);
            if (c == '\r' || c == '\n') {
                if (length) {
                    line[length] = 0;
                    puts("GV-ECHO "); puts(line); putc('\n');
                    length = 0;
                }
            } else if (length + 1 < sizeof line) {
                line[length++] = c;
            }
        }
        if (!(inb(0x64) & 1)) continue;
        seen[0] = seen[1];
        seen[1] = seen[2];
        seen[2] = seen[3];
        seen[3] = inb(0x60);
        if (memeq(seen, wanted, 4)) {
            puts("GV-CTRL-ALT-DEL\n");
            reset();
        }
    }
}
