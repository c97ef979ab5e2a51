;; memory_hog (hostile): grows its memory by 1 MiB at a time, forever, and
;; touches every new page. Its memory limit must stop it with a typed
;; failure, and the host must be unaffected.
(component
  (core module $guest
    (memory (export "memory") 1)
    (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
      (i32.const 1024))
    (func (export "run") (param i32 i32) (result i32)
      (local $old i32)
      (loop $more
        (local.set $old (memory.grow (i32.const 16)))
        ;; memory.grow returns -1 where the host refuses without trapping:
        ;; a hog keeps asking anyway.
        (if (i32.ne (local.get $old) (i32.const -1))
          (then (i32.store (i32.shl (local.get $old) (i32.const 16)) (i32.const 1))))
        (br $more))
      (i32.const 16)))
  (core instance $g (instantiate $guest))
  (func (export "run") (param "input" (list u8)) (result (result (list u8) (error string)))
    (canon lift (core func $g "run") (memory $g "memory") (realloc (func $g "cabi_realloc")))))
