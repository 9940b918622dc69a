;;; dgls-e2e.el --- End-to-end check of dgls.el through eglot  -*- lexical-binding: t; -*-

;; emacs --batch -l editors/emacs/dgls.el -l editors/emacs/test/dgls-e2e.el FILE
;;
;; Environment: DGLS_SERVER_COMMAND, the server command line split on spaces
;; (default "dgls serve").  FILE is a Python file with the comments "# sum:" and
;; "# product of a and b" (comments, so that any text a random test model writes is valid).
;; Connects eglot to the server, then (1) asks for code actions at a cursor, executes
;; the one that runs dgls.completeHere, and (2) runs `dgls-infill-selection' on a region; after each edit it
;; checks that only the span changed.  Prints one "DGLS-E2E key: value" line per fact
;; and exits 0 when every check passed.

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'dgls)

(defvar dgls-e2e--failures 0)
(defvar dgls-e2e--edits 0 "Number of workspace edits eglot applied.")

(defun dgls-e2e--say (key fmt &rest args)
  (princ (format "DGLS-E2E %s: %s\n" key (apply #'format fmt args))))

(defun dgls-e2e--check (name ok &optional detail)
  (dgls-e2e--say name "%s%s" (if ok "ok" "FAIL") (if detail (format " %S" detail) ""))
  (unless ok (cl-incf dgls-e2e--failures)))

(defun dgls-e2e--wait (pred seconds)
  "Process server output until PRED holds or SECONDS pass; return PRED's value."
  (let ((deadline (+ (float-time) seconds)) value)
    (while (and (not (setq value (funcall pred))) (< (float-time) deadline))
      (accept-process-output nil 0.1))
    value))

(defun dgls-e2e--command (action)
  "The Command of ACTION: a CodeAction carries one in :command, a bare Command is one."
  (if (stringp (plist-get action :command)) action (plist-get action :command)))

(defun dgls-e2e--command-id (action)
  (plist-get (dgls-e2e--command action) :command))

(advice-add 'eglot--apply-workspace-edit :after
            (lambda (&rest _) (cl-incf dgls-e2e--edits)))

(defun dgls-e2e--span-check (name before after)
  "Check that the buffer is BEFORE + something + AFTER; name the result NAME."
  (let* ((text (buffer-substring-no-properties (point-min) (point-max)))
         (middle-len (- (length text) (length before) (length after))))
    (dgls-e2e--check (concat name "-prefix-intact") (string-prefix-p before text))
    (dgls-e2e--check (concat name "-suffix-intact") (string-suffix-p after text))
    (when (>= middle-len 0)
      (dgls-e2e--say (concat name "-inserted") "%S"
                     (substring text (length before) (+ (length before) middle-len))))))

(defun dgls-e2e-run (file)
  (setq eglot-confirm-server-initiated-edits nil)
  (let ((dgls-server-command (split-string (or (getenv "DGLS_SERVER_COMMAND") "dgls serve"))))
    (dgls-eglot-setup))
  (find-file file)
  (python-mode)
  (apply #'eglot (eglot--guess-contact))
  (unless (dgls-e2e--wait (lambda () (and (eglot-current-server) (bound-and-true-p eglot--managed-mode))) 60)
    (dgls-e2e--say "connect" "FAIL")
    (kill-emacs 2))
  (dgls-e2e--say "connect" "ok")
  (dgls-e2e--say "dgls-mode" "%s" (bound-and-true-p dgls-mode))
  (dgls-e2e--wait (lambda () (member (car dgls-status) '("ready" "error"))) 60)
  (dgls-e2e--say "status" "%S" dgls-status)

  ;; 1. The code action that runs dgls.completeHere, at the end of "# sum:".
  (goto-char (point-min))
  (search-forward "# sum:")
  (let* ((before (buffer-substring-no-properties (point-min) (point)))
         (after (buffer-substring-no-properties (point) (point-max)))
         (actions (eglot-code-actions (point) (point)))
         (titles (mapcar (lambda (a) (plist-get a :title)) actions))
         (action (cl-find "dgls.completeHere" actions :key #'dgls-e2e--command-id :test #'equal))
         (edits dgls-e2e--edits))
    (dgls-e2e--say "code-actions" "%S" titles)
    (dgls-e2e--check "complete-here-offered" action)
    (when action
      (let ((command (dgls-e2e--command action)))
        ;; What eglot does when the action is picked; its 10 s request timeout may pass
        ;; before a slow infill answers, the edit still arrives: wait for it below.
        (condition-case err
            (eglot-execute-command (eglot-current-server)
                                   (plist-get command :command)
                                   (plist-get command :arguments))
          (jsonrpc-error (dgls-e2e--say "complete-here-request" "%S" err))))
      (dgls-e2e--check "complete-here-edit-applied"
                       (dgls-e2e--wait (lambda () (> dgls-e2e--edits edits)) 60))
      (dgls-e2e--span-check "complete-here" before after)))

  ;; 2. `dgls-infill-selection' on the region "a and b" of "# product of a and b".
  (goto-char (point-min))
  (search-forward "a and b")
  (let* ((end (point))
         (beg (- end (length "a and b")))
         (before (buffer-substring-no-properties (point-min) beg))
         (after (buffer-substring-no-properties end (point-max)))
         (edits dgls-e2e--edits))
    (set-mark beg)
    (goto-char end)
    (activate-mark)
    (call-interactively #'dgls-infill-selection)
    (dgls-e2e--check "infill-selection-edit-applied"
                     (dgls-e2e--wait (lambda () (> dgls-e2e--edits edits)) 60))
    (dgls-e2e--span-check "infill-selection" before after))

  (dgls-e2e--say "failures" "%d" dgls-e2e--failures)
  (ignore-errors (eglot-shutdown (eglot-current-server)))
  (kill-emacs (if (zerop dgls-e2e--failures) 0 1)))

(dgls-e2e-run (car command-line-args-left))

;;; dgls-e2e.el ends here
