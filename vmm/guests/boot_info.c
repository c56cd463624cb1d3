/* Reports what the VMM's 64-bit boot setup gave it: the CPU mode, the segments, the
 * zero page's header, command line and e820 map, and the MP table's processors. */
#include "guest.h"

static u64 read_cr0(void) { u64 v; __asm__ volatile("mov %%cr0, %0" : "=r"(v)); return v; }
static u64 read_cr4(void) { u64 v; __asm__ volatile("mov %%cr4, %0" : "=r"(v)); return v; }
static u64 read_cr3(void) { u64 v; __asm__ volatile("mov %%cr3, %0" : "=r"(v)); return v; }
static u16 read_cs(void) { u16 v; __asm__ volatile("mov %%cs, %0" : "=r"(v)); return v; }
static u16 read_ds(void) { u16 v; __asm__ volatile("mov %%ds, %0" : "=r"(v)); return v; }
static u64 rdmsr(u32 index) {
    u32 lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(index));
    return ((u64)hi << 32) | lo;
}

void guest_main(u8 *zero_page) {
    puts("zero page: "); puthex((u64)zero_page); putc('\n');
    puts("efer: "); puthex(rdmsr(0xc0000080)); putc('\n');
    puts("cr0: "); puthex(read_cr0()); puts(" cr3: "); puthex(read_cr3());
    puts(" cr4: "); puthex(read_cr4()); putc('\n');
    puts("cs: "); puthex(read_cs()); puts(" ds: "); puthex(read_ds()); putc('\n');
    puts("header: ");
    for (int i = 0; i < 4; i++) putc((char)zero_page[0x202 + i]);
    puts(" boot_flag: "); puthex(*(u16 *)(zero_page + 0x1fe));
    puts(" loader: "); puthex(zero_page[0x210]); putc('\n');
    const char *cmdline = (const char *)(u64)*(u32 *)(zero_page + 0x228);
    puts("cmdline: "); puts(cmdline); putc('\n');
    u8 entries = zero_page[0x1e8];
    for (int i = 0; i < entries; i++) {
        u8 *entry = zero_page + 0x2d0 + 20 * i;
        puts("e820: "); puthex(*(u64 *)entry); putc(' '); puthex(*(u64 *)(entry + 8));
        putc(' '); putdec(*(u32 *)(entry + 16)); putc('\n');
    }
    /* The MP floating pointer in the last KiB of base memory. */
    for (u64 p = 0x9fc00; p < 0xa0000; p += 16) {
        if (memeq((void *)p, "_MP_", 4)) {
            u8 *table = (u8 *)(u64)*(u32 *)(p + 4);
            u16 count = *(u16 *)(table + 34);
            u8 *entry = table + 44;
            int cpus = 0;
            for (int i = 0; i < count; i++) {
                if (entry[0] == 0) { cpus++; entry += 20; } else { entry += 8; }
            }
            puts("mptable cpus: "); putdec(cpus); putc('\n');
        }
    }
    puts("boot-info done\n");
    reset();
}
