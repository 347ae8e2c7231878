/* unbounded_x86_64.S: a jump table whose index has no visible bound (no cmp, no and): the
 * analysis cannot size the table and sweeps the function's symbol range instead. Case 1 tail-calls
 * malloc, reachable only through the table, so finding it proves the sweep ran. */
    .text
    .globl gt_asm_unbounded
    .type gt_asm_unbounded, @function
gt_asm_unbounded:
    leaq .Ltable(%rip), %rdx
    movslq (%rdx,%rdi,4), %rax
    addq %rdx, %rax
    jmp *%rax
.Lcase0:
    xorl %eax, %eax
    ret
.Lcase1:
    jmp malloc@PLT
    .size gt_asm_unbounded, .-gt_asm_unbounded

    .section .rodata
    .align 4
.Ltable:
    .long .Lcase0-.Ltable
    .long .Lcase1-.Ltable

    .section .note.GNU-stack,"",@progbits
