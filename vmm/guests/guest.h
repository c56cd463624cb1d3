/* What every test guest shares: port I/O, MMIO, the serial console, reset. */
#ifndef GUEST_H
#define GUEST_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;

static inline void outb(u16 port, u8 value) { __asm__ volatile("outb %0, %1" : : "a"(value), "Nd"(port)); }
static inline u8 inb(u16 port) { u8 value; __asm__ volatile("inb %1, %0" : "=a"(value) : "Nd"(port)); return value; }
static inline u32 mmio_read(u64 address) { return *(volatile u32 *)address; }
static inline void mmio_write(u64 address, u32 value) { *(volatile u32 *)address = value; }
static inline void barrier(void) { __asm__ volatile("mfence" : : : "memory"); }

#define COM1 0x3f8

static void putc(char c) {
    while (!(inb(COM1 + 5) & 0x20)) {}
    outb(COM1, (u8)c);
}

static void puts(const char *s) { while (*s) putc(*s++); }

static void puthex(u64 value) {
    puts("0x");
    int started = 0;
    for (int shift = 60; shift >= 0; shift -= 4) {
        u8 digit = (value >> shift) & 0xf;
        if (digit || started || shift == 0) {
            putc("0123456789abcdef"[digit]);
            started = 1;
        }
    }
}

static void putdec(u64 value) {
    char digits[20];
    int n = 0;
    do { digits[n++] = '0' + value % 10; value /= 10; } while (value);
    while (n) putc(digits[--n]);
}

static void *memset(void *dst, int c, u64 n) { u8 *d = dst; while (n--) *d++ = (u8)c; return dst; }
static void *memcpy(void *dst, const void *src, u64 n) { u8 *d = dst; const u8 *s = src; while (n--) *d++ = *s++; return dst; }
static int memeq(const void *a, const void *b, u64 n) { const u8 *x = a, *y = b; while (n--) if (*x++ != *y++) return 0; return 1; }

/* Pulse the reset line through the i8042: the VMM ends. */
static void __attribute__((noreturn)) reset(void) {
    outb(0x64, 0xfe);
    for (;;) __asm__ volatile("cli; hlt");
}

/* The Generic Event Device's event register (reading clears it) and its power button bit. */
#define GED_EVENT 0x603
#define GED_POWER_BUTTON 1

/* ACPI S5 through the sleep control register (SLP_TYP 5 << 2 | SLP_EN): the VMM ends. */
static void __attribute__((noreturn)) power_off(void) {
    outb(0x600, 0x34);
    for (;;) __asm__ volatile("cli; hlt");
}

#endif
