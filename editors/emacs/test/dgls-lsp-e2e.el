;;; dgls-lsp-e2e.el --- End-to-end check of dgls.el through lsp-mode  -*- lexical-binding: t; -*-

;; emacs --batch -L editors/emacs -l editors/emacs/test/dgls-lsp-e2e.el FILE
;;
;; Like dgls-e2e.el, for lsp-mode: registers dgls with `dgls-lsp-setup', starts it on FILE (a
;; Python file with the comment "# sum:"), runs `dgls-complete-here' after "# sum:" and checks
;; that only the span changed.  Prints "DGLS-E2E key: value" lines; exits 0 on success.

;;; Code:

(require 'lsp-mode)
(require 'dgls)

(defun dgls-lsp-e2e--say (key fmt &rest args)
  (princ (format "DGLS-E2E %s: %s\n" key (apply #'format fmt args))))

(defun dgls-lsp-e2e--wait (pred seconds)
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    value))

(defun dgls-lsp-e2e-run (file)
  ;; A quiet, self-contained session: no session file in $HOME, no UI extras.
  (setq lsp-auto-guess-root t
        lsp-session-file (expand-file-name "lsp-session" temporary-file-directory)
        lsp-enable-file-watchers nil
        lsp-restart 'ignore
        lsp-modeline-workspace-status-enable nil
        lsp-modeline-code-actions-enable nil
        lsp-modeline-diagnostics-enable nil
        lsp-headerline-breadcrumb-enable nil
        lsp-lens-enable nil
        lsp-completion-enable nil)
  (let ((dgls-server-command (split-string (or (getenv "DGLS_SERVER_COMMAND") "dgls serve"))))
    (dgls-lsp-setup)
    (find-file file)
    (python-mode)
    (lsp))
  (dgls-lsp-e2e--wait (lambda () (member (car dgls-status) '("ready" "error"))) 60)
  (dgls-lsp-e2e--say "status" "%S" dgls-status)
  (dgls-lsp-e2e--say "dgls-mode" "%s" (bound-and-true-p dgls-mode))
  (goto-char (point-min))
  (search-forward "# sum:")
  (let* ((before (buffer-substring-no-properties (point-min) (point)))
         (after (buffer-substring-no-properties (point) (point-max)))
         (original (concat before after))
         ok)
    (dgls-complete-here)
    (dgls-lsp-e2e--wait (lambda () (not (equal (buffer-string) original))) 60)
    (let ((text (buffer-substring-no-properties (point-min) (point-max))))
      (setq ok (and (not (equal text original))
                    (string-prefix-p before text) (string-suffix-p after text)))
      (dgls-lsp-e2e--say "complete-here" "%s %S" (if ok "ok" "FAIL")
                         (if ok (substring text (length before) (- (length text) (length after)))
                           text)))
    (kill-emacs (if (and ok dgls-mode) 0 1))))

(dgls-lsp-e2e-run (car command-line-args-left))

;;; dgls-lsp-e2e.el ends here
